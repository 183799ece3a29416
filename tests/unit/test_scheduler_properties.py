"""Scheduler invariants on random fleets and demands (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.catalog import Workload, load_catalog
from controlplane.scheduler import Demand, NodeSlot, PlacedReplica, SchedulerConfig, schedule

CATALOG = load_catalog()
NOW = datetime(2026, 11, 22, tzinfo=UTC)
TYPES = sorted(CATALOG.accelerators)
MODELS = ["qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "glm-4-9b", "qwen2.5-72b-instruct"]
CONFIG = SchedulerConfig()


@st.composite
def nodes(draw: st.DrawFn, index: int) -> NodeSlot:
    accelerator = draw(st.sampled_from(TYPES))
    count = draw(st.sampled_from([1, 2, 4, 8]))
    healthy = draw(st.sets(st.integers(0, count - 1), min_size=0, max_size=count))
    lease = draw(st.one_of(st.none(), st.integers(60, 40 * 86400)))
    schedulable = draw(st.booleans() | st.just(True))
    return NodeSlot(
        node_id=f"n{index}",
        cluster=draw(st.sampled_from(["a", "b", "c"])),
        region="r",
        vendor=CATALOG.accelerator(accelerator).vendor,
        accelerator=accelerator,
        devices=tuple((d, d % 2) for d in sorted(healthy)),
        schedulable=schedulable,
        unschedulable_reason="" if schedulable else "cordoned",
        lease_end=None if lease is None else NOW + timedelta(seconds=lease),
    )


@st.composite
def fleets(draw: st.DrawFn) -> list[NodeSlot]:
    size = draw(st.integers(1, 25))
    return [draw(nodes(i)) for i in range(size)]


demands = st.lists(
    st.builds(
        Demand,
        request_id=st.sampled_from([f"r{i}" for i in range(6)]),
        model=st.sampled_from(MODELS),
        target_output_tokens_per_s=st.floats(1, 30_000),
        workload=st.builds(
            Workload,
            input_tokens=st.sampled_from([128.0, 1024.0, 4096.0]),
            output_tokens=st.sampled_from([64.0, 256.0]),
            ttft_p95_s=st.sampled_from([0.5, 2.0]),
            tpot_p95_s=st.sampled_from([0.03, 0.1]),
        ),
        clusters=st.sampled_from([frozenset(), frozenset({"a"})]),
        max_price_per_million_output=st.one_of(st.none(), st.floats(0.05, 20)),
        priority=st.integers(0, 3),
    ),
    max_size=5,
    unique_by=lambda d: d.request_id,
)


@settings(max_examples=200, deadline=None)
@given(fleet=fleets(), wanted=demands, seed_replicas=st.integers(0, 3))
def test_plans_respect_the_fleet(fleet: list[NodeSlot], wanted: list[Demand], seed_replicas: int) -> None:
    existing = []
    for i, node in enumerate(fleet[:seed_replicas]):
        if node.devices:
            existing.append(
                PlacedReplica(f"old{i}", "old", node.node_id, node.accelerator, 1, (node.devices[0][0],), 1)
            )
    plan = schedule(fleet, wanted, existing, CATALOG, now=NOW, config=CONFIG)
    by_id = {n.node_id: n for n in fleet}
    booked = {(r.node_id, d) for r in existing for d in r.devices}
    assert [r.request_id for r in plan.requests] == [
        d.request_id for d in sorted(wanted, key=lambda d: (-d.priority, d.request_id))
    ]
    for request in plan.requests:
        demand = next(d for d in wanted if d.request_id == request.request_id)
        if request.status == "satisfied":
            assert request.planned_output_tokens_per_s >= demand.target_output_tokens_per_s - 1e-6
        else:
            assert request.reason
        for placement in request.placements:
            node = by_id[placement.node_id]
            assert node.schedulable
            assert placement.accelerator == node.accelerator
            assert not demand.clusters or node.cluster in demand.clusters
            assert (
                node.lease_end is None
                or (node.lease_end - NOW).total_seconds() >= CONFIG.min_lease_remaining_s
            )
            assert len(placement.devices) == placement.tp == len(set(placement.devices))
            healthy = {d for d, _ in node.devices}
            for device in placement.devices:
                assert device in healthy
                assert (node.node_id, device) not in booked, "device booked twice"
                booked.add((node.node_id, device))
            cap = demand.max_price_per_million_output
            option = next(o for o in request.options if o.accelerator == placement.accelerator)
            assert cap is None or option.cost_per_million_output <= cap
