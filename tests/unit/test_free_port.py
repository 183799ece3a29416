"""``free_port``: ports for children to listen on, kept out of the kernel's ephemeral range (where
outgoing connections take their local ports) and never handed out twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.embedded import etcd
from controlplane.embedded.etcd import free_port


def test_ports_lie_below_the_ephemeral_range_and_are_not_repeated() -> None:
    floor = etcd._ephemeral_floor()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    if floor - etcd.LOWEST_PORT >= 1000:
        assert all(etcd.LOWEST_PORT <= p < floor for p in ports), ports
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # nothing took it meanwhile


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_passed_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listening: int
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("60000\t60999\n")  # room below it: random picks
    monkeypatch.setattr(etcd, "EPHEMERAL_RANGE", ranges)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]  # free again once closed
    picks = iter([listening, free])
    monkeypatch.setattr(etcd._ports, "randrange", lambda low, high: next(picks))
    monkeypatch.setattr(etcd, "_handed_out", set())
    assert free_port() == free


def test_without_room_below_the_range_the_kernel_picks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1024\t65535\n")
    monkeypatch.setattr(etcd, "EPHEMERAL_RANGE", ranges)
    monkeypatch.setattr(etcd._ports, "randrange", lambda low, high: pytest.fail("no random pick expected"))
    assert 1024 <= free_port() <= 65535
