"""free_port: the kernel's choice by default, or a process's own range walked in turn, so
parallel test workers (and outgoing connections) never take a port another has just picked."""

from __future__ import annotations

import socket

import pytest

from bus.localkafka import LocalKafkaError, _PortRange


def _unused_block(size: int) -> int:
    """The first port of `size` consecutive ports that nothing is bound to right now."""
    for first in range(40_000, 60_000, size):
        ports = _PortRange()
        ports.use(first, first + size - 1)
        if [ports.pick("127.0.0.1") for _ in range(size)] == list(range(first, first + size)):
            return first
    raise AssertionError("no free block of ports on this machine")


def test_the_default_is_a_port_the_kernel_chose_and_that_binds() -> None:
    port = _PortRange().pick("127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_range_hands_out_each_port_once_before_coming_back_to_the_first() -> None:
    first = _unused_block(5)
    ports = _PortRange()
    ports.use(first, first + 4)
    picked = [ports.pick("127.0.0.1") for _ in range(5)]
    assert picked == [first, first + 1, first + 2, first + 3, first + 4]
    assert ports.pick("127.0.0.1") == first


def test_a_bound_port_in_the_range_is_skipped() -> None:
    first = _unused_block(3)
    ports = _PortRange()
    ports.use(first, first + 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        taken.listen()
        assert ports.pick("127.0.0.1") == first + 1


def test_a_range_with_every_port_bound_is_a_clear_error() -> None:
    first = _unused_block(2)
    ports = _PortRange()
    ports.use(first, first + 1)
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", first))
        b.bind(("127.0.0.1", first + 1))
        with pytest.raises(LocalKafkaError, match=f"no free port left in {first}-{first + 1}"):
            ports.pick("127.0.0.1")


@pytest.mark.parametrize(("first", "last"), [(80, 2000), (3000, 2999), (65000, 70000)])
def test_a_range_outside_the_unprivileged_ports_is_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="1024 <= first <= last <= 65535"):
        _PortRange().use(first, last)
