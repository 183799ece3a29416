"""Device-health damping (pure): flapping devices are held unhealthy, stable ones pass through."""

from __future__ import annotations

from controlplane.api.damping import HealthDamper
from controlplane.domain.nodes import DeviceHealth, DeviceTelemetry

H, U = DeviceHealth.HEALTHY, DeviceHealth.UNHEALTHY


def beat(*health: DeviceHealth) -> list[DeviceTelemetry]:
    return [DeviceTelemetry(i, health=h) for i, h in enumerate(health)]


def test_a_flapping_device_is_held_unhealthy_and_its_neighbour_is_untouched() -> None:
    damper = HealthDamper(window_s=60, max_changes=4, hold_s=300)
    seen = []
    for t in range(12):  # device 0 flaps every beat, device 1 stays healthy
        out, _ = damper.damp("n1", beat(H if t % 2 else U, H), float(t))
        seen.append((out[0].health, out[1].health))
    assert seen[:4] == [(U, H), (H, H), (U, H), (H, H)]  # passed through until the 4th change
    assert all(pair == (U, H) for pair in seen[4:])  # then one stable value: no write per flap
    assert damper.held("n1") == [0]
    reasons = {damper.damp("n1", beat(H, H), 12.0 + i)[0][0].health_reason for i in range(3)}
    assert len(reasons) == 1 and "damped" in reasons.pop()  # a stable reason too


def test_a_held_device_is_trusted_again_after_a_quiet_hold() -> None:
    damper = HealthDamper(window_s=60, max_changes=3, hold_s=100)
    newly = 0
    for t in range(4):
        newly += damper.damp("n1", beat(H if t % 2 else U), float(t))[1]
    assert newly == 1
    assert damper.damp("n1", beat(H), 50.0)[0][0].health is U  # quiet, but not long enough
    assert damper.damp("n1", beat(H), 200.0)[0][0].health is H
    assert damper.held("n1") == []


def test_occasional_changes_are_not_flapping() -> None:
    damper = HealthDamper(window_s=60, max_changes=4, hold_s=300)
    for t in range(0, 1000, 100):  # one change every 100 s
        out, newly = damper.damp("n1", beat(H if (t // 100) % 2 else U), float(t))
        assert newly == 0 and out[0].health is (H if (t // 100) % 2 else U)
