"""Benchmark of the payload modes (CPU only, no broker); prints one JSON document.

Per rights request (a realistic object: 16 personal fields, a nested user): the cost of
encoding it as the poller does in each mode, against the baseline of encoding it unchanged
(`full`, ratio = mode time / full time). `encrypted-new-subjects` makes and wraps a data key
per object (every object is a new person, the worst case); `encrypted` reuses the subject's key
(a person's later events); `decrypt` is a consumer opening an encrypted event.

    .venv/bin/python -m bench.privacy [--objects 5000] [--smoke]   # smoke: 50 objects
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable
from typing import Any

from bus.envelope import dumps
from bus.privacy import Decryptor, Encryptor, KeyRing, MasterKey, shape, subject_of
from dastra_kafka.contracts._examples import _RIGHTS_REQUEST

__all__ = ["main"]

_PERSON = {
    "phoneNumber": "+33 6 12 34 56 78",
    "address": "12 rue de la Paix",
    "zipCode": "75002",
    "city": "Paris",
    "message": "Bonjour, je souhaite recevoir une copie de mes données puis leur effacement.",
}


def _objects(count: int) -> list[dict[str, Any]]:
    return [{**copy.deepcopy(_RIGHTS_REQUEST), **_PERSON, "id": n} for n in range(count)]


def _timed(objects: list[dict[str, Any]], encode: Callable[[dict[str, Any]], bytes]) -> float:
    started = time.perf_counter()
    for obj in objects:
        encode(obj)
    return (time.perf_counter() - started) / len(objects) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--smoke", action="store_true", help="50 objects")
    args = parser.parse_args()
    if args.smoke:
        args.objects = 50
    objects = _objects(args.objects)
    master = MasterKey(os.urandom(32))
    hash_key = os.urandom(32)
    ring = KeyRing()
    encryptor = Encryptor(master, ring, "bench")

    def encrypted(obj: dict[str, Any]) -> bytes:
        batch = encryptor.batch()
        data = shape("encrypted", "rights_request", obj, workspace_id=1, batch=batch)
        batch.commit()
        return dumps(data)

    results: dict[str, float] = {
        "full": _timed(objects, dumps),
        "redacted": _timed(
            objects,
            lambda o: dumps(
                shape("redacted", "rights_request", o, workspace_id=1, hash_key=hash_key)
            ),
        ),
        "thin": _timed(
            objects, lambda o: dumps(shape("thin", "rights_request", o, workspace_id=1))
        ),
        "encrypted-new-subjects": _timed(objects, encrypted),
        "encrypted": _timed(objects, encrypted),  # the same subjects again: keys reused
    }
    decryptor = Decryptor(master, ring)
    batch = encryptor.batch()
    sealed = [batch.seal("rights_request", o, subject_of("rights_request", o, 1)) for o in objects]
    started = time.perf_counter()
    for data in sealed:
        decryptor.open(data)
    results["decrypt"] = (time.perf_counter() - started) / len(sealed) * 1e6
    full = results["full"]
    print(
        json.dumps(
            {
                "benchmark": "privacy payload modes",
                "objects": args.objects,
                "bytes": {
                    "full": len(dumps(objects[0])),
                    "redacted": len(
                        dumps(
                            shape(
                                "redacted",
                                "rights_request",
                                objects[0],
                                workspace_id=1,
                                hash_key=hash_key,
                            )
                        )
                    ),
                    "thin": len(dumps(shape("thin", "rights_request", objects[0], workspace_id=1))),
                    "encrypted": len(dumps(sealed[0])),
                },
                "us_per_object": {mode: round(us, 1) for mode, us in results.items()},
                "ratio_to_full": {mode: round(us / full, 2) for mode, us in results.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
