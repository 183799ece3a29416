"""Capacity requests on the in-memory store: idempotency, quotas, tenants, validation, status."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controlplane.capacity import CapacityManager, Tenant, TenantDirectory, TenantFileError, token_digest
from controlplane.catalog import load_catalog
from controlplane.domain.capacity import CapacitySpec, LatencyClass, Phase
from controlplane.domain.nodes import Vendor
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound, QuotaExceeded, Unauthenticated
from controlplane.scheduler import NodeSlot
from controlplane.store.memory import MemoryStore

CATALOG = load_catalog()
NOW = datetime(2026, 11, 22, tzinfo=UTC)
ALICE = Tenant("alice", max_accelerators=8, max_spend_per_hour=100)
BOB = Tenant("bob")


def spec(**over: Any) -> CapacitySpec:
    base: dict[str, Any] = {
        "model": "qwen2.5-7b-instruct",
        "output_tokens_per_second": 5000,
        "latency": LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
    }
    return CapacitySpec(**(base | over))


def fleet() -> list[NodeSlot]:
    return [
        NodeSlot(f"h100-{i}", "c1", "r1", Vendor.NVIDIA, "H100", tuple((d, 0) for d in range(8)))
        for i in range(2)
    ] + [NodeSlot("br-0", "c1", "r1", Vendor.BIREN, "BR104", tuple((d, 0) for d in range(8)))]


def manager(nodes: list[NodeSlot] | None = None) -> CapacityManager:
    ids = (f"cr-{i:04d}" for i in itertools.count())
    return CapacityManager(MemoryStore(), CATALOG, fleet=lambda: fleet() if nodes is None else nodes,
                           wall=lambda: NOW, new_id=lambda: next(ids))  # fmt: skip


async def test_create_plans_replicas_and_estimates() -> None:
    m = manager()
    record, created = await m.create(ALICE, spec(), "key-1")
    assert created and record.id == "cr-0000" and record.tenant == "alice"
    assert record.status.phase is Phase.PENDING
    assert record.status.conditions[0].reason == "AwaitingExecutor"
    assert record.status.predicted_output_tokens_per_second >= 5000
    assert {r.state for r in record.status.replicas} == {"Planned"}
    assert all(r.node_id and r.devices for r in record.status.replicas)
    assert record.estimate is not None and record.estimate.accelerators >= 1


async def test_one_idempotency_key_never_creates_two_requests() -> None:
    m = manager()
    first, _ = await m.create(ALICE, spec(), "same")
    again, created = await m.create(ALICE, spec(), "same")
    assert not created and again.id == first.id
    racing = await asyncio.gather(*(m.create(BOB, spec(), "race") for _ in range(5)))
    assert len({r.id for r, _ in racing}) == 1
    assert sum(created for _, created in racing) == 1
    with pytest.raises(FailedPrecondition, match="idempotency_key"):
        await m.create(ALICE, spec(output_tokens_per_second=1), "same")
    assert len(await m.list(ALICE)) == 1


async def test_tenants_see_only_their_own() -> None:
    m = manager()
    mine, _ = await m.create(ALICE, spec())
    with pytest.raises(NotFound):
        await m.get(BOB, mine.id)
    with pytest.raises(NotFound):
        await m.cancel(BOB, mine.id)
    assert await m.list(BOB) == []
    assert [r.id for r in await m.list(ALICE)] == [mine.id]


async def test_quotas() -> None:
    m = manager()
    tight = Tenant("tight", max_accelerators=1)
    await m.create(tight, spec(output_tokens_per_second=100))
    with pytest.raises(QuotaExceeded, match="max_accelerators 1"):
        await m.create(tight, spec(output_tokens_per_second=100))
    poor = Tenant("poor", max_spend_per_hour=0.5)
    with pytest.raises(QuotaExceeded, match="max_spend_per_hour"):
        await m.create(poor, spec(output_tokens_per_second=100))
    assert await m.list(poor) == []  # nothing stored


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"model": "gpt-9"}, "spec.model"),
        ({"allowed_accelerators": ("H100", "TPU")}, "spec.allowed_accelerators[1]"),
        ({"latency": LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=0.5)}, "spec.latency.tpot_p95_ms"),
        ({"latency": LatencyClass(ttft_p95_ms=0.5, tpot_p95_ms=50)}, "spec.latency.ttft_p95_ms"),
        ({"mean_input_tokens": 40000}, "spec.mean_input_tokens"),
    ],
)
async def test_bad_specs_name_the_field(over: dict[str, Any], field: str) -> None:
    m = manager()
    with pytest.raises(InvalidArgument) as info:
        await m.create(ALICE, spec(**over))
    assert info.value.field == field
    assert await m.list(ALICE) == []


@pytest.mark.parametrize(
    ("over", "nodes", "reason"),
    [
        ({"max_price_per_million_output_tokens": 0.001}, None, "PriceCapBelowCheapestOption"),
        ({"model": "deepseek-v3", "allowed_vendors": (Vendor.BIREN,)}, None, "NoAllowedAcceleratorCanServe"),
        ({}, [], "NoAcceleratorInFleet"),
    ],
)
async def test_unsatisfiable_requests_say_which_constraint(
    over: dict[str, Any], nodes: list[NodeSlot] | None, reason: str
) -> None:
    record, _ = await manager(nodes).create(BOB, spec(**over))
    assert record.status.phase is Phase.UNSATISFIABLE
    assert record.status.conditions[0].reason == reason
    assert record.status.conditions[0].message


async def test_update_and_cancel() -> None:
    m = manager()
    record, _ = await m.create(BOB, spec(output_tokens_per_second=1000))
    updated = await m.update(BOB, record.id, output_tokens_per_second=20000, expected_generation=1)
    assert updated.generation == 2 and updated.spec.output_tokens_per_second == 20000
    assert updated.status.observed_generation == 2
    with pytest.raises(FailedPrecondition, match="generation 2"):
        await m.update(BOB, record.id, output_tokens_per_second=10, expected_generation=1)
    with pytest.raises(InvalidArgument) as info:
        await m.update(BOB, record.id, output_tokens_per_second=-5)
    assert info.value.field == "output_tokens_per_second"
    cancelled = await m.cancel(BOB, record.id)
    assert cancelled.status.phase is Phase.CANCELLED
    assert await m.list(BOB) == [] and len(await m.list(BOB, include_cancelled=True)) == 1
    with pytest.raises(FailedPrecondition, match="cancelled"):
        await m.update(BOB, record.id, output_tokens_per_second=5)


async def test_watch_snapshot_then_changes() -> None:
    m = manager()
    first, _ = await m.create(BOB, spec())
    await m.create(ALICE, spec())
    seen: list[tuple[bool, str, str]] = []

    async def follow() -> None:
        async for snapshot, record in m.watch(BOB):
            seen.append((snapshot, record.id, record.status.phase.value))
            if len(seen) == 2:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    await m.cancel(BOB, first.id)
    await asyncio.wait_for(task, 2)
    assert seen == [(True, first.id, "Pending"), (False, first.id, "Cancelled")]


def test_tenant_directory(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(f"tenants:\n  - {{name: a, token: secret-a, max_accelerators: 4}}\n"
                    f"  - {{name: b, token_sha256: {token_digest('secret-b')}}}\n")  # fmt: skip
    directory = TenantDirectory.load(path)
    assert directory.authenticate("Bearer secret-a") == Tenant("a", 4, None)
    assert directory.authenticate("bearer secret-b").name == "b"
    for bad in (None, "", "Basic abc", "Bearer ", "Bearer nope"):
        with pytest.raises(Unauthenticated):
            directory.authenticate(bad)
    path.write_text("tenants:\n  - {name: a}\n")
    with pytest.raises(TenantFileError, match="token"):
        TenantDirectory.load(path)
