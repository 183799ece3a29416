from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agents.discovery.simulated import FleetFileError, SimulatedBackend, load_fleet, parse_duration
from tests.unit.conftest import FakeClock


def test_default_fleet_covers_every_vendor_twice() -> None:
    fleet = load_fleet()
    vendors = Counter(n.vendor for n in fleet)
    assert set(vendors) == {"nvidia", "ascend", "biren", "metax"}
    assert min(vendors.values()) >= 2
    assert any(n.lease for n in fleet)
    assert any(n.lease is None for n in fleet)
    assert {"H100", "H20", "A100", "910B3", "910B4", "910C", "BR104", "BR100", "C500", "C550"} <= {
        n.model for n in fleet
    }


def test_fault_injection_follows_the_clock(clock: FakeClock) -> None:
    node = next(n for n in load_fleet() if n.faults)
    backend = SimulatedBackend(node, clock=clock)
    fault = node.faults[0]
    assert all(s.health != "unhealthy" for s in backend.sample())
    clock.advance(fault.after_s + 1)
    samples = backend.sample()
    assert samples[fault.device].health == "unhealthy"
    assert sum(s.health == "unhealthy" for s in samples) == 1


def test_devices_look_real() -> None:
    node = load_fleet()[0]
    devices = SimulatedBackend(node).discover()
    assert len({d.uuid for d in devices}) == node.devices
    assert {d.numa_node for d in devices} == set(range(node.numa_nodes))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nodes: 3", "'nodes' list"),
        (
            "nodes: [{id: a, cluster: c, vendor: intel, model: X, devices: 1, memory_gib: 8}]",
            "node a: vendor",
        ),
        ("nodes: [{id: a, cluster: c, vendor: nvidia, model: X, memory_gib: 8}]", "missing field 'devices'"),
        (
            "nodes: [{id: a, cluster: c, vendor: nvidia, model: X, devices: 1, memory_gib: 8,"
            " lease: {provider: p, ends_in: soon, price_per_accelerator_hour: 1}}]",
            "lease.ends_in",
        ),
        (
            "nodes: [{id: a, cluster: c, vendor: nvidia, model: X, devices: 1, memory_gib: 8},"
            " {id: a, cluster: c, vendor: nvidia, model: X, devices: 1, memory_gib: 8}]",
            "appears twice",
        ),
        ("nodes: [: bad", "not valid YAML"),
    ],
)
def test_bad_fleet_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetFileError) as info:
        load_fleet(path)
    assert fragment in str(info.value)


def test_durations() -> None:
    assert parse_duration("90s", "x") == 90
    assert parse_duration("36h", "x") == 36 * 3600
    assert parse_duration(5, "x") == 5
