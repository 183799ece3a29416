from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from controlplane.domain.nodes import GiB, NodeRegistration, validation_message


def device(i: int, **over: Any) -> dict[str, Any]:
    return {"uuid": f"GPU-{i}", "index": i, "model": "H100", "memory_bytes": 80 * GiB, **over}


def reg(**over: Any) -> dict[str, Any]:
    return {"node_id": "n1", "cluster": "c1", "vendor": "nvidia", "devices": [device(0), device(1)], **over}


def error_of(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        NodeRegistration.model_validate(data)
    return validation_message(info.value)


def test_valid_registration() -> None:
    node = NodeRegistration.model_validate(reg())
    assert node.accelerator == "H100"
    assert len(node.devices) == 2


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (reg(node_id=""), "node_id", "must not be empty"),
        (reg(node_id="Bad_ID!"), "node_id", "lowercase"),
        (reg(vendor="intel"), "vendor", "nvidia"),
        (reg(devices=[]), "devices", "at least 1"),
        (reg(devices=[device(0, memory_bytes=-1)]), "devices[0].memory_bytes", "greater than or equal"),
        (
            reg(devices=[device(0, memory_bytes=100 * 1024 * GiB)]),
            "devices[0].memory_bytes",
            "less than or equal",
        ),
        (reg(devices=[device(0), device(1, uuid="GPU-0")]), "devices[1].uuid", "duplicate uuid"),
        (reg(devices=[device(0), device(1, index=0)]), "devices[1].index", "duplicate index"),
        (reg(devices=[device(i) for i in range(65)]), "devices", "at most 64"),
        (reg(cluster=""), "cluster", "at least 1"),
        (reg(labels={"bad key!": "x"}), "labels", "not a valid key"),
    ],
)
def test_bad_registration_names_the_field(data: dict[str, Any], field: str, fragment: str) -> None:
    got_field, message = error_of(data)
    assert got_field == field
    assert fragment in message


def test_lease_must_end_after_start_and_carry_a_zone() -> None:
    now = datetime.now(UTC)
    lease = {"provider": "p", "lease_id": "l", "start_time": now, "end_time": now - timedelta(hours=1),
             "price_per_accelerator_hour": 1.0}  # fmt: skip
    field, message = error_of(reg(lease=lease))
    assert field == "lease"
    assert "after start_time" in message
    naive = dict(lease, start_time=datetime(2026, 1, 1), end_time=datetime(2026, 2, 1))
    field, message = error_of(reg(lease=naive))
    assert field == "lease.start_time"
    assert "timezone" in message
    field, _ = error_of(
        reg(lease=dict(lease, end_time=now + timedelta(hours=1), price_per_accelerator_hour=-1))
    )
    assert field == "lease.price_per_accelerator_hour"
