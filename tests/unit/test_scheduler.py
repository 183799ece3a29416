"""The pure scheduler on hand-built fleets: type choice, placement, spread, filters, explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.catalog import load_catalog
from controlplane.domain.nodes import Vendor
from controlplane.scheduler import Demand, NodeSlot, PlacedReplica, SchedulerConfig, options_for, schedule

CATALOG = load_catalog()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
VENDOR = {"H100": Vendor.NVIDIA, "A100": Vendor.NVIDIA, "H20": Vendor.NVIDIA, "910B3": Vendor.ASCEND,
          "BR104": Vendor.BIREN, "C500": Vendor.METAX}  # fmt: skip


def node(node_id: str, accelerator: str, devices: int = 8, *, cluster: str = "c1", **kw: object) -> NodeSlot:
    numa = [(i, 0 if i < devices // 2 else 1) for i in range(devices)]
    return NodeSlot(node_id, cluster, "r1", VENDOR[accelerator], accelerator, tuple(numa), **kw)  # type: ignore[arg-type]


def qwen7(request_id: str = "req-1", tps: float = 1000.0, **kw: object) -> Demand:
    return Demand(request_id, "qwen2.5-7b-instruct", tps, **kw)  # type: ignore[arg-type]


def one_replica_tps(accelerator: str) -> float:
    options = options_for(qwen7(), CATALOG, {accelerator: 8}, SchedulerConfig())
    return options[0].output_tokens_per_s


def test_cheapest_type_per_token_and_target_met() -> None:
    fleet = [node("h100-a", "H100"), node("a100-a", "A100")]
    plan = schedule(fleet, [qwen7(tps=8000)], [], CATALOG, now=NOW).for_request("req-1")
    assert plan.status == "satisfied"
    assert plan.planned_output_tokens_per_s >= 8000
    assert {p.accelerator for p in plan.placements} == {"H100"}
    options = {o.accelerator: o for o in plan.options}
    assert options["H100"].cost_per_million_output < options["A100"].cost_per_million_output
    assert "cheapest per token" in plan.placements[0].reason


def test_replicas_of_one_request_spread_over_nodes() -> None:
    fleet = [node(f"h100-{i}", "H100") for i in range(4)]
    plan = schedule(fleet, [qwen7(tps=3.5 * one_replica_tps("H100"))], [], CATALOG, now=NOW).for_request(
        "req-1"
    )
    assert len(plan.placements) == 4
    assert len({p.node_id for p in plan.placements}) == 4


def test_new_requests_pack_next_to_existing_replicas() -> None:
    fleet = [node("h100-a", "H100"), node("h100-b", "H100")]
    existing = [PlacedReplica(f"r{i}", "other", "h100-a", "H100", 1, (i,), 100.0) for i in range(6)]
    plan = schedule(fleet, [qwen7(tps=10)], existing, CATALOG, now=NOW).for_request("req-1")
    [placement] = plan.placements
    assert placement.node_id == "h100-a"  # best fit: keeps h100-b whole for a large TP group
    assert placement.devices == (6,)


def test_tp_group_stays_on_one_node_and_numa() -> None:
    fleet = [node("h100-a", "H100")]
    plan = schedule(fleet, [Demand("big", "qwen2.5-72b-instruct", 100)], [], CATALOG, now=NOW).for_request(
        "big"
    )
    [placement] = plan.placements
    assert placement.tp >= 2 and len(placement.devices) == placement.tp
    assert all(d < 4 for d in placement.devices) or all(d >= 4 for d in placement.devices)


def test_unusable_nodes_are_skipped_with_reasons() -> None:
    fleet = [
        node("cordoned", "H100", schedulable=False, unschedulable_reason="cordoned"),
        node("expiring", "H100", lease_end=NOW + timedelta(minutes=20)),
        node("elsewhere", "H100", cluster="c2"),
        node("good", "H100", lease_end=NOW + timedelta(days=3)),
    ]
    plan = schedule(fleet, [qwen7(tps=10, clusters=frozenset({"c1"}))], [], CATALOG, now=NOW).for_request(
        "req-1"
    )
    assert [p.node_id for p in plan.placements] == ["good"]
    assert plan.rejected_nodes == {"cordoned": 1, "lease ends in less than 1h": 1, "cluster not allowed": 1}
    assert plan.rejected_examples["cordoned"] == ("cordoned",)


def test_fleet_full_is_partial_with_counts() -> None:
    fleet = [node("h100-a", "H100", devices=2)]
    plan = schedule(fleet, [qwen7(tps=10 * one_replica_tps("H100"))], [], CATALOG, now=NOW).for_request(
        "req-1"
    )
    assert plan.status == "partial"
    assert len(plan.placements) == 2
    assert plan.reason.startswith("fleet full")
    assert plan.rejected_nodes == {"fewer than 1 free healthy devices": 1}


@pytest.mark.parametrize(
    ("demand", "fragment"),
    [
        (qwen7(max_price_per_million_output=0.01), "price cap below the cheapest option"),
        (Demand("ds", "deepseek-v3", 10, allowed_vendors=frozenset({Vendor.BIREN})), "no allowed accelerator"),
        (qwen7(denied_vendors=frozenset({Vendor.NVIDIA}), allowed_accelerators=frozenset({"H100"})),
         "no allowed accelerator"),
    ],
)  # fmt: skip
def test_unsatisfiable_requests_name_the_constraint(demand: Demand, fragment: str) -> None:
    fleet = [node("h100-a", "H100"), node("br-a", "BR104")]
    plan = schedule(fleet, [demand], [], CATALOG, now=NOW).for_request(demand.request_id)
    assert plan.status == "unsatisfiable"
    assert fragment in plan.reason
    assert plan.placements == ()


def test_types_mix_when_the_cheapest_pool_runs_dry() -> None:
    fleet = [node("h100-a", "H100", devices=2), node("a100-a", "A100"), node("a100-b", "A100")]
    plan = schedule(fleet, [qwen7(tps=3 * one_replica_tps("H100"))], [], CATALOG, now=NOW).for_request(
        "req-1"
    )
    assert plan.status == "satisfied"
    kinds = [p.accelerator for p in plan.placements]
    assert kinds[:2] == ["H100", "H100"] and set(kinds[2:]) == {"A100"}
    assert "cheaper pools are full" in plan.placements[-1].reason


def test_small_remainder_takes_the_cheaper_replica() -> None:
    # H100 is cheaper per token than A100, A100 cheaper per hour: a small remainder goes to A100
    fleet = [node("h100-a", "H100"), node("a100-a", "A100")]
    h100 = one_replica_tps("H100")
    plan = schedule(fleet, [qwen7(tps=h100 + 50)], [], CATALOG, now=NOW).for_request("req-1")
    options = {o.accelerator: o for o in plan.options}
    cheapest_per_token = min(options.values(), key=lambda o: o.cost_per_million_output)
    assert plan.placements[0].accelerator == cheapest_per_token.accelerator
    assert len(plan.placements) == 2
    last = plan.placements[-1]
    assert "remainder costs less" in last.reason
    assert last.cost_per_hour == min(o.cost_per_hour for o in options.values() if o.feasible)


def test_existing_replicas_count_toward_the_target() -> None:
    fleet = [node("h100-a", "H100")]
    existing = [PlacedReplica("r1", "req-1", "h100-a", "H100", 1, (0,), 5000.0)]
    plan = schedule(fleet, [qwen7(tps=4000)], existing, CATALOG, now=NOW).for_request("req-1")
    assert plan.status == "satisfied" and plan.placements == ()
    assert plan.existing_output_tokens_per_s == 5000.0


def test_priority_wins_scarce_capacity_and_plans_are_deterministic() -> None:
    fleet = [node("h100-a", "H100", devices=1)]
    demands = [qwen7("low", tps=10), qwen7("high", tps=10, priority=5)]
    plan = schedule(fleet, demands, [], CATALOG, now=NOW)
    assert plan.for_request("high").status == "satisfied"
    assert plan.for_request("low").status == "unsatisfiable"
    assert plan == schedule(list(reversed(fleet)), list(reversed(demands)), [], CATALOG, now=NOW)


def test_a_long_prompt_mix_gets_more_prefill_compute_and_says_why() -> None:
    """Same model, same means: the long-prompt mix (p95 prompt 60k tokens) is placed on a larger
    TP degree than the short-prompt one, and the placement's explanation names the tail."""
    from controlplane.catalog import Workload

    fleet = [node("h100-a", "H100"), node("h100-b", "H100")]
    short = qwen7("short", tps=500, workload=Workload(1000, 256, 2.0, 0.05, input_tokens_p95=3000))
    long = qwen7("long", tps=500, workload=Workload(1000, 256, 2.0, 0.05, input_tokens_p95=60_000))
    plan = schedule(fleet, [short, long], [], CATALOG, now=NOW)
    s, lg = plan.for_request("short"), plan.for_request("long")
    assert s.status == lg.status == "satisfied"
    assert max(p.tp for p in lg.placements) > max(p.tp for p in s.placements)
    why = lg.placements[0].reason
    assert "shape: p95 prompt 60000 tokens prefills in" in why
    assert "tp1: p95 prompt of 60000 tokens takes" in why and "over the TTFT target" in why
    assert "shape: p95 prompt 3000 tokens" in s.placements[0].reason and "tp1:" not in s.placements[0].reason
    # a type whose every degree is too slow for the tail is not an option, with the reason
    options = {o.accelerator: o for o in options_for(long, CATALOG, {"H100": 8, "H20": 8}, SchedulerConfig())}
    assert options["H100"].feasible and not options["H20"].feasible
    assert "p95 prompt of 60000 tokens" in options["H20"].reason
