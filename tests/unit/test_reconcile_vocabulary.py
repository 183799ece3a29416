"""The pure vocabulary the reconciler and the API share: demand from a spec, reason codes
carried by plans, and the one rule that turns a plan into a condition reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.capacity import demand_of as reexported_demand_of
from controlplane.capacity import workload_of as reexported_workload_of
from controlplane.catalog import load_catalog
from controlplane.domain.capacity import CapacityRecord, CapacitySpec, CapacityStatus, LatencyClass, Phase
from controlplane.domain.nodes import Vendor
from controlplane.reconcile.status import request_status
from controlplane.scheduler import NodeSlot, ReasonCode, RequestPlan, schedule
from controlplane.scheduler.demand import demand_of, workload_of
from controlplane.scheduler.reasons import code_of, plan_reason

CATALOG = load_catalog()
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def spec(target: float = 5000, **over: object) -> CapacitySpec:
    return CapacitySpec(
        model="qwen2.5-7b-instruct",
        output_tokens_per_second=target,
        latency=LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
        **over,  # type: ignore[arg-type]
    )


def plan_for(s: CapacitySpec, fleet: list[NodeSlot]) -> RequestPlan:
    return schedule(fleet, [demand_of("cr-1", s)], [], CATALOG, now=NOW).for_request("cr-1")


ONE_H100 = [NodeSlot("h100-0", "c1", "r1", Vendor.NVIDIA, "H100", ((0, 0),))]


def test_old_import_paths_still_work() -> None:
    assert reexported_demand_of is demand_of
    assert reexported_workload_of is workload_of


def test_demand_carries_the_spec() -> None:
    s = spec(1234, denied_accelerators=["BR104"], input_tokens_per_second=99)
    d = demand_of("cr-9", s)
    assert (d.request_id, d.target_output_tokens_per_s, d.target_input_tokens_per_s) == ("cr-9", 1234, 99)
    assert d.denied_accelerators == frozenset({"BR104"})
    assert d.workload.ttft_p95_s == pytest.approx(1.0)
    assert d.workload.tpot_p95_s == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("s", "fleet", "status", "code"),
    [
        (spec(100), ONE_H100, "satisfied", None),
        (spec(10**6), ONE_H100, "partial", ReasonCode.FLEET_FULL),
        (spec(100), [], "unsatisfiable", ReasonCode.NO_ACCELERATOR),
        (
            spec(100, max_price_per_million_output_tokens=0.0001),
            ONE_H100,
            "unsatisfiable",
            ReasonCode.PRICE_CAP,
        ),
        (
            spec(100, allowed_accelerators=["BR104"]),
            ONE_H100,
            "unsatisfiable",
            ReasonCode.NO_ALLOWED_ACCELERATOR,
        ),
    ],
)
def test_plans_carry_the_code_their_explanation_names(
    s: CapacitySpec, fleet: list[NodeSlot], status: str, code: ReasonCode | None
) -> None:
    plan = plan_for(s, fleet)
    assert (plan.status, plan.code) == (status, code)
    assert code_of(plan.reason) == code  # the text and the code never disagree


def test_no_plan_and_a_satisfied_plan_read_as_fleet_full() -> None:
    assert plan_reason(None) is ReasonCode.FLEET_FULL
    assert plan_reason(plan_for(spec(100), ONE_H100)) is ReasonCode.FLEET_FULL
    assert plan_reason(plan_for(spec(100), [])) is ReasonCode.NO_ACCELERATOR


def record(s: CapacitySpec) -> CapacityRecord:
    return CapacityRecord(
        id="cr-1", tenant="t", spec=s, status=CapacityStatus(phase=Phase.PENDING), created_at=NOW
    )


def test_status_reason_comes_from_the_plan_code() -> None:
    s = spec(100, max_price_per_million_output_tokens=0.0001)
    status = request_status(record(s), [], plan_for(s, ONE_H100), None, NOW, 100)
    assert status.phase is Phase.UNSATISFIABLE
    assert status.conditions[0].reason == "PriceCapBelowCheapestOption"
    waiting = request_status(record(spec(100)), [], None, None, NOW, 100)
    assert (waiting.phase, waiting.conditions[0].reason) == (Phase.PENDING, "FleetFull")
    assert waiting.conditions[0].message == "waiting for capacity"
