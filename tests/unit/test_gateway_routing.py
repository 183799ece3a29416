"""The gateway's pure parts: lanes from records, the router, admission decisions, body parsing."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from controlplane.domain.capacity import CapacityRecord, CapacitySpec, CapacityStatus, Phase
from controlplane.domain.nodes import Vendor
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.errors import InvalidArgument
from controlplane.gateway import openai
from controlplane.gateway.admission import TokenBucket, Verdict, decide
from controlplane.gateway.router import Ring, Router
from controlplane.gateway.routes import Backend, Lane, build

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def request(rid: str, tenant: str, model: str = "m", *, reserved: float = 100.0, ttft_ms: float = 800.0,
            phase: Phase = Phase.READY) -> CapacityRecord:  # fmt: skip
    spec = CapacitySpec.model_validate(
        {
            "model": model,
            "output_tokens_per_second": reserved,
            "latency": {"ttft_p95_ms": ttft_ms, "tpot_p95_ms": 50},
        }
    )
    return CapacityRecord(
        id=rid, tenant=tenant, spec=spec, status=CapacityStatus(phase=phase), created_at=NOW
    )


def replica(rid: str, request_id: str, state: ReplicaState = ReplicaState.READY, *, tps: float = 100.0,
            endpoint: str = "http://127.0.0.1:1") -> ReplicaRecord:  # fmt: skip
    return ReplicaRecord(
        id=rid, request_id=request_id, tenant="t", model="m", vendor=Vendor.NVIDIA, accelerator="H100",
        cluster="c", node_id="n", devices=(0,), tensor_parallel=1, engine="simulated", dtype="bf16",
        state=state, predicted_output_tokens_per_second=tps, endpoint=endpoint, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_lanes_hold_only_ready_replicas_of_the_tenants_own_requests() -> None:
    lanes = build(
        [
            request("a1", "alpha", reserved=100, ttft_ms=800),
            request("a2", "alpha", reserved=50, ttft_ms=500),
            request("b1", "beta"),
            request("gone", "beta", "other", phase=Phase.CANCELLED),
        ],
        [
            replica("r1", "a1"),
            replica("r2", "a2", tps=300),
            replica("r3", "a1", ReplicaState.STARTING),
            replica("r4", "a1", ReplicaState.DRAINING),
            replica("r5", "a1", ReplicaState.FAILED),  # fenced
            replica("r6", "a1", ReplicaState.READY, endpoint=""),
            replica("r7", "b1"),
        ],
    )
    alpha = lanes[("alpha", "m")]
    assert [b.replica_id for b in alpha.backends] == ["r1", "r2"]
    assert alpha.reserved_tps == 150
    assert alpha.ttft_budget_s == 0.5
    assert alpha.capacity_tps == 400
    assert [b.replica_id for b in lanes[("beta", "m")].backends] == ["r7"]
    assert ("beta", "other") not in lanes


def backends(*caps: float) -> list[Backend]:
    return [Backend(f"r{i}", "q", f"http://127.0.0.1:{i + 1}", cap, "H100") for i, cap in enumerate(caps)]


def test_least_load_splits_work_in_proportion_to_capacity() -> None:
    pool = backends(300.0, 100.0)
    router = Router(policy="least_load", rng=random.Random(1))
    outstanding: dict[str, float] = {}
    for _ in range(400):  # nothing finishes: the split is by capacity alone
        b = router.choose(pool, outstanding, cost=10)
        assert b is not None
        outstanding[b.replica_id] = outstanding.get(b.replica_id, 0.0) + 10
    assert outstanding["r0"] == pytest.approx(3 * outstanding["r1"], rel=0.02)


def test_affinity_keeps_a_prefix_on_one_replica_until_its_load_is_out_of_bounds() -> None:
    pool = backends(100.0, 100.0, 100.0)
    router = Router(policy="affinity", load_factor=1.25, slack_s=0.5)
    home = router.choose(pool, {}, cost=10, affinity="prefix-1")
    assert home is not None
    assert all(router.choose(pool, {}, cost=10, affinity="prefix-1") == home for _ in range(5))
    # lightly loaded: a call in flight does not scatter the prefix
    assert router.choose(pool, {home.replica_id: 20.0}, cost=10, affinity="prefix-1") == home
    # far above the mean: the next replica on the ring takes it
    moved = router.choose(pool, {home.replica_id: 500.0}, cost=10, affinity="prefix-1")
    assert moved is not None
    assert moved != home


def test_affinity_spreads_distinct_prefixes_by_capacity() -> None:
    pool = backends(300.0, 100.0)
    router = Router(policy="affinity")
    counts = Counter(router.choose(pool, {}, cost=1, affinity=f"p{i}").replica_id for i in range(4000))  # type: ignore[union-attr]
    assert 2.0 < counts["r0"] / counts["r1"] < 4.5


def test_a_replica_leaving_the_ring_moves_only_its_own_keys() -> None:
    pool = backends(100.0, 100.0, 100.0, 100.0)
    before = {k: Ring.of(pool).walk(k)[0] for k in (f"k{i}" for i in range(2000))}
    after = {k: Ring.of(pool[:3]).walk(k)[0] for k in before}
    moved = [k for k in before if before[k] != after[k]]
    assert moved
    assert all(before[k] == "r3" for k in moved)


def test_excluded_replicas_are_never_chosen() -> None:
    pool = backends(100.0, 100.0)
    for policy in ("affinity", "least_load", "random"):
        router = Router(policy=policy)  # type: ignore[arg-type]
        assert router.choose(pool, {}, cost=1, affinity="x", exclude={"r0"}) == pool[1]
        assert router.choose(pool, {}, cost=1, affinity="x", exclude={"r0", "r1"}) is None


def bucket(tokens: float, *, rate: float = 100.0, burst: float = 200.0) -> TokenBucket:
    return TokenBucket(rate=rate, burst=burst, tokens=tokens, stamp=0.0)


def test_admission_guarantees_the_reservation_then_best_effort_then_queue_then_429() -> None:
    common = {"capacity_tps": 1000.0, "spare_horizon_s": 1.0}
    assert decide(bucket(200), 50, queued_s=5.0, remaining_s=1.0, **common).verdict is Verdict.GUARANTEED
    assert decide(bucket(0), 50, queued_s=0.2, remaining_s=1.0, **common).verdict is Verdict.BEST_EFFORT
    queued = decide(bucket(0), 50, queued_s=2.0, remaining_s=1.0, **common)
    assert (queued.verdict, queued.wait_s) == (Verdict.QUEUE, 0.5)
    rejected = decide(bucket(-400), 50, queued_s=2.0, remaining_s=1.0, **common)
    assert rejected.verdict is Verdict.REJECT
    assert rejected.wait_s == pytest.approx(4.5)


def test_a_call_larger_than_a_burst_needs_only_a_full_bucket() -> None:
    b = bucket(200)
    assert b.need(5000) == 200
    assert (
        decide(b, 5000, queued_s=9, capacity_tps=10, spare_horizon_s=1, remaining_s=1).verdict
        is Verdict.GUARANTEED
    )
    empty = bucket(0, rate=0.0)
    assert math.isinf(empty.wait_s(10))


def test_the_bucket_refills_at_the_reserved_rate_up_to_the_burst() -> None:
    b = bucket(0)
    b.refill(1.5)
    assert b.tokens == 150
    b.refill(10.0)
    assert b.tokens == 200


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("completions", b"[]", "body"),
        ("completions", b"\xff", "body"),
        ("completions", b'{"prompt": "x"}', "model"),
        ("completions", b'{"model": "m", "prompt": []}', "prompt"),
        ("completions", b'{"model": "m", "prompt": "x", "max_tokens": 2000000}', "max_tokens"),
        ("completions", b'{"model": "m", "prompt": "x", "stream": 1}', "stream"),
        ("completions", b'{"model": "m", "prompt": "x", "stream_options": {"include_usage": "y"}}',
         "stream_options.include_usage"),
        ("chat", b'{"model": "m", "messages": []}', "messages"),
        ("chat", b'{"model": "m", "messages": [{"content": "x"}]}', "messages[0].role"),
        ("chat", b'{"model": "m", "messages": [{"role": "user", "content": 3}]}', "messages[0].content"),
    ],
)  # fmt: skip
def test_bad_bodies_name_their_field(kind: str, body: bytes, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        openai.parse(kind, body)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.message.startswith(field + ": ")


def test_calls_carry_costs_affinity_and_the_usage_request() -> None:
    call = openai.parse(
        "completions", b'{"model": "m", "prompt": "abcdefgh", "max_tokens": 7, "stream": true, "top_p": 0.5}'
    )
    assert (call.prompt_tokens, call.max_tokens, call.cost, call.stream, call.include_usage) == (
        2,
        7,
        9,
        True,
        False,
    )
    assert call.payload["stream_options"] == {"include_usage": True}  # the gateway meters streams
    assert call.payload["top_p"] == 0.5  # passed through
    same_prefix = openai.parse("completions", b'{"model": "m", "prompt": "abcdefgh"}')
    assert same_prefix.affinity == call.affinity
    session = openai.parse("completions", b'{"model": "m", "prompt": "abcdefgh"}', session="s1")
    assert session.affinity != call.affinity
    chat = openai.parse(
        "chat", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3}'
    )
    assert (chat.prompt_tokens, chat.max_tokens, chat.stream) == (2, 3, False)
    assert "stream_options" not in chat.payload


def test_a_prompt_weighs_what_it_costs_the_replicas_at_the_requests_mix() -> None:
    # replicas serving 1,000 output and 4,000 prompt tokens/s at the request's mix (600 in / 150 out)
    fast = Backend("r0", "q", "http://127.0.0.1:1", 1000.0, "H100", input_tps=4000.0)
    slow = Backend("r1", "q", "http://127.0.0.1:2", 500.0, "H100", input_tps=2000.0)
    lane = Lane("alpha", "m", ("q",), 100.0, 1.0, False, (fast, slow))
    assert lane.prompt_weight == pytest.approx(0.25)
    assert lane.work(600, 150) == pytest.approx(300.0)  # the mix: its prompt costs what its output does
    assert lane.work(6000, 150) == pytest.approx(1650.0)  # ten times the prompt: prompt-heavy
    # a record without the prompt rate: a prompt token weighs one output token (as before)
    old = Lane("alpha", "m", ("q",), 100.0, 1.0, False, tuple(backends(1000.0)))
    assert (old.prompt_weight, old.work(600, 150)) == (1.0, 750.0)


def test_the_replica_record_carries_its_prompt_rate_to_the_lane() -> None:
    from tests.unit import test_reconcile

    # the reconciler records the placement's prompt tokens/s at the request's mix (600 in / 150 out)
    planned = test_reconcile.run(
        [test_reconcile.request(3000, mean_input_tokens=600, mean_output_tokens=150)], []
    )
    assert planned.creates
    for r in planned.creates:
        ratio = r.predicted_input_tokens_per_second / r.predicted_output_tokens_per_second
        assert ratio == pytest.approx(4.0, rel=0.01)
    record = replica("r1", "a1").model_copy(update={"predicted_input_tokens_per_second": 1234.0})
    lanes = build([request("a1", "alpha")], [record])
    assert lanes[("alpha", "m")].backends[0].input_tps == 1234.0
