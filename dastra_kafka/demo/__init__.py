"""The main job behind `make run`: the whole pipeline, live, then checked.

Consumes the settings. Starts the Dastra sandbox (or uses the Dastra API when DASTRA_BASE_URL is
set) and runs `dastra-kafka doctor` against it (a FAIL stops the demo), then starts (or reuses,
when KAFKA_BOOTSTRAP_SERVERS is set) a Kafka broker, applies topics.yaml, and
runs the poller, the worker (Faust agents), the webhook service, the hook dispatcher and the lag
server as supervised processes. Then it drives traffic: rights requests and tasks created in the
sandbox as a Dastra user would, commands sent through the webhook (a search with `?wait`
included), a REST hook subscriber on loopback, and one malformed command produced straight to
Kafka. A live terminal view shows events, commands, results, dead letters, hook deliveries and
lag. Recipes switched on with `--recipe NAME` (checked before anything starts) run in the worker;
their commands' results are counted apart. At the end (`--duration`, or Ctrl-C) a summary
checks that every created item was published exactly once, every command has exactly one
result, and the hook subscriber received every event; the exit code says whether all checks
passed.

With a privacy mode (`--privacy redacted|thin|encrypted`, README "Privacy") the services run in
that mode (keys made for the run unless PRIVACY_* configures them); the summary also checks that
no requester's e-mail or name is in clear on the event and result topics, and in `encrypted`
mode erases one requester (`privacy erase`, by e-mail) and checks that their records now read as
erased while every other requester's still decrypt.

With `--chaos` (`dastra_kafka/chaos.py`) the demo owns its broker (data directory under the run
directory) and, while the traffic flows, SIGKILLs the poller, the worker, the webhook and the
hook dispatcher at random and restarts them, and restarts the broker on its data directory. The
traffic then behaves as a careful client: each command carries an Idempotency-Key and is sent
again with the same key while the webhook is down or answers 503 (or 409, key in progress), and
a `?wait` that timed out is asked again until answered. The same checks must pass; the summary
also reports the kills and broker restarts.

The package: `services.py` (the stack: Dastra, the doctor, the broker, the topics, the services'
definitions), `traffic.py` (the traffic and the hook subscriber), `tail.py` (the reader of the
topics), `view.py` (the live view and the summary) and `report.py` (the options, what the demo
saw and its checks); `run` composes them.

    code = run(settings, catalogue, DemoOptions(duration_s=60))
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from confluent_kafka import KafkaException
from rich.console import Console

from bus.localkafka import LocalKafkaError, free_port
from bus.privacy import Decryptor, MasterKey
from bus.privacy.erasure import erase, parse_subject
from bus.privacy.keystore import load_ring
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import TopicCatalogue
from consumers.lag import GroupSelection, LagMonitor
from dastra_kafka.chaos import Chaos, ChaosLog
from dastra_kafka.demo.report import DemoOptions, DemoReport, as_json, scan_for_personal_data
from dastra_kafka.demo.services import (
    Ports,
    apply_topics,
    doctor,
    privacy_setup,
    service_env,
    services,
    use_dastra,
    use_kafka,
)
from dastra_kafka.demo.tail import Tail
from dastra_kafka.demo.traffic import Subscriber, Traffic, send_malformed, subscribe
from dastra_kafka.demo.view import summary, watch
from dastra_kafka.settings import Settings
from dastra_kafka.supervisor import ServiceFailedError, Supervisor

__all__ = ["DemoOptions", "DemoReport", "run", "scan_for_personal_data"]


def run(settings: Settings, catalogue: TopicCatalogue, options: DemoOptions) -> int:
    """Run the demo; return the process exit code (0 when every check passed)."""
    console = Console(stderr=options.as_json)
    report = DemoReport(privacy=options.privacy)
    privacy_env, privacy = privacy_setup(settings.privacy, options.privacy)
    lock = threading.Lock()
    stop = threading.Event()
    run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="dastra-kafka-demo-"))
    if options.chaos is not None:
        report.chaos = ChaosLog(options.chaos)
    with _signals(stop), contextlib.ExitStack() as stack:
        try:
            dastra, admin = stack.enter_context(use_dastra(settings, console))
            doctor(dastra, console)
            # Under chaos the demo owns its broker, on a data directory it can restart it on.
            data_dir = run_dir / "kafka" if options.chaos is not None else None
            kafka, broker = stack.enter_context(use_kafka(settings, console, data_dir))
            console.print(apply_topics(kafka, catalogue))
            if privacy_env:
                console.print(f'privacy: {options.privacy} mode (README "Privacy")')
            token = secrets.token_urlsafe(24)
            ports = Ports(*(free_port() for _ in range(6)))
            supervisor = stack.enter_context(Supervisor(run_dir))
            subscriber = stack.enter_context(Subscriber(report, lock))
            enabled = {"RECIPES_ENABLE": ",".join(options.recipes)} if options.recipes else {}
            if options.chaos is not None:
                # A SIGKILLed worker leaves the group only when its session times out: the
                # restarted one is assigned its partitions sooner with a shorter session.
                enabled |= {"WORKER_SESSION_TIMEOUT_S": "10", "WORKER_HEARTBEAT_INTERVAL_S": "1"}
            base = {**service_env(kafka, dastra), **privacy_env}
            for service in services(base, ports, token, enabled):
                with console.status(f"starting {service.name}"):
                    supervisor.start(service)
                console.print(f"  {service.name} running (log: {supervisor.log_of(service.name)})")
            webhook_url = f"http://127.0.0.1:{ports.webhook}"
            subscribe(webhook_url, token, subscriber, ports)
            tail = Tail(kafka, report, lock)
            tail.start()
            stack.callback(tail.stop)
            send_malformed(kafka, report)
            traffic = Traffic(options, admin, webhook_url, token, report, lock)
            traffic.start()
            stack.callback(traffic.stop)
            monitor = stack.enter_context(
                LagMonitor(kafka, settings.lag, GroupSelection.of(kafka, settings.lag))
            )
            # The demo's own token, made for this run, in the fragment (never sent to the
            # server in the URL): the page signs in with it.
            studio_url = f"http://127.0.0.1:{ports.studio}/studio/#token={token}"
            console.print(f"studio: [bold]{studio_url}[/] (build, test and run recipes)")
            urls = {
                "webhook": f"{webhook_url}/docs",
                "lag page": f"http://127.0.0.1:{ports.lag}/",
                "studio": studio_url,
                "logs": str(run_dir),
            }
            chaos = None
            if report.chaos is not None:
                chaos = Chaos(supervisor, broker, report.chaos, lock)
                chaos.start()
                stack.callback(chaos.stop)  # before the supervisor stops the services
            watch(options, report, lock, stop, supervisor, monitor, traffic, chaos, urls, console)
            # The checks are of what came out by the end of the drain: a recipe's item made
            # after it (its task, from the last request) would be an event whose hook delivery
            # nobody waited for.
            tail.stop()
            if options.privacy == "encrypted" and admin is not None and not stop.is_set():
                _erase_one(kafka, privacy, catalogue, report, lock, console)
        except (ServiceFailedError, LocalKafkaError, RuntimeError, httpx.HTTPError) as exc:
            console.print(f"[red]the demo could not run:[/] {exc}")
            report.errors.append(f"{type(exc).__name__}: {exc}"[:300])
    if options.as_json:
        print(json.dumps(as_json(report), indent=2))
    else:
        summary(report, console)
    return 0 if report.passed else 1


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM end the traffic early; the summary still follows."""
    previous = {
        signum: signal.signal(signum, lambda _s, _f: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _erase_one(
    kafka: KafkaSettings,
    privacy: PrivacySettings,
    catalogue: TopicCatalogue,
    report: DemoReport,
    lock: threading.Lock,
    console: Console,
) -> None:
    """`privacy erase` of the first requester whose request reached Kafka, then every encrypted
    rights request event opened with the key topic as it is now."""
    with lock:
        sealed = {rid: list(events) for rid, events in report.sealed.items()}
        requesters = dict(report.requesters)
    targets = [rid for rid in sorted(sealed) if rid in requesters]
    if len(targets) < 2:
        report.erasure = (False, "fewer than two requesters reached Kafka: run the demo longer")
        return
    erased_id = targets[0]
    master = privacy.master_key_bytes()
    assert master is not None  # `privacy_setup` sets it in encrypted mode
    try:
        with console.status(f"privacy erase: the requester of rights request {erased_id}"):
            plan, _audit = erase(
                kafka,
                privacy,
                catalogue,
                parse_subject(requesters[erased_id], None),
                by="dastra-kafka demo",
                count=False,
            )
            decryptor = Decryptor(MasterKey(master), load_ring(kafka))
    except (RuntimeError, ValueError, KafkaException) as exc:  # Erasure-, Privacy-, read errors
        report.erasure = (False, f"privacy erase failed: {exc}"[:300])
        return
    theirs = [decryptor.open(data) for data in sealed[erased_id]]
    others = [
        (rid, decryptor.open(data))
        for rid, events in sealed.items()
        if rid != erased_id
        for data in events
    ]
    # Requests the webhook created (`crm<n>@`) are not in `requesters`: readable is enough.
    readable = [
        opened
        for rid, opened in others
        if not opened.is_erased
        and opened.data.get("email") == requesters.get(rid, opened.data.get("email"))
    ]
    ok = bool(plan.key_ids) and all(o.is_erased for o in theirs) and len(readable) == len(others)
    report.erasure = (
        ok,
        f"{len(plan.key_ids)} data key(s) of the requester of request {erased_id} deleted: "
        f"{sum(o.is_erased for o in theirs)} of their {len(theirs)} events read as erased; "
        f"{len(readable)} of {len(others)} events of other requesters decrypt",
    )
