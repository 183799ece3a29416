"""One reservation across gateway instances (the pure split, the watch of the instances' demand on
the in-memory store, the bucket at the share), and the bucket's true-up to the tokens served."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.domain.demand import GatewayDemand
from controlplane.gateway.admission import Admission, Settings, Verdict
from controlplane.gateway.routes import Backend, Lane
from controlplane.gateway.share import ShareWatch, split
from controlplane.store import keys
from controlplane.store.memory import MemoryStore
from tests.unit.conftest import FakeClock

LANE = Lane(
    "alpha", "m", ("cr-1",), reserved_tps=100.0, ttft_budget_s=1.0, scale_to_zero=False,
    backends=(Backend("r1", "cr-1", "http://r1", 1000.0, "H100"),),
)  # fmt: skip


def test_alone_an_instance_holds_the_whole_reservation() -> None:
    assert split("a", {}) == 1.0
    assert split("a", {"a": 500.0}) == 1.0
    assert split("a", {"a": 0.0}) == 1.0


def test_shares_follow_the_offered_demand_with_a_floor() -> None:
    assert split("a", {"a": 50.0, "b": 50.0}) == pytest.approx(0.5)
    # 80/20: the light one is floored at 1/2 before normalising: 0.8/1.3 and 0.5/1.3
    assert split("a", {"a": 80.0, "b": 20.0}) == pytest.approx(0.8 / 1.3)
    assert split("b", {"a": 80.0, "b": 20.0}) == pytest.approx(0.5 / 1.3)
    # an idle instance does not weigh in the busy one's split, and takes the floor for itself
    assert split("a", {"a": 100.0, "b": 0.0}) == 1.0
    assert split("b", {"a": 100.0, "b": 0.0}) == pytest.approx(0.5 / 1.5)
    # a new instance, not yet published: counted live by itself, with the floor
    assert split("new", {"a": 100.0}) == pytest.approx(0.5 / 1.5)
    # nobody offers anything: an even split
    assert split("a", {"a": 0.0, "b": 0.0, "c": 0.0}) == pytest.approx(1 / 3)


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.floats(0, 1e6), min_size=2))
def test_instances_that_see_the_same_demand_never_guarantee_more_than_the_reservation(
    demand: dict[str, float],
) -> None:
    active = [i for i, d in demand.items() if d > 0]
    shares = {i: split(i, demand) for i in demand}
    assert all(0 < s <= 1 for s in shares.values())
    if active:
        assert sum(shares[i] for i in active) == pytest.approx(1.0)  # the ones that use theirs
        assert min(shares[i] for i in active) >= 1 / (2 * len(demand)) - 1e-12  # nobody starves
    else:
        assert sum(shares.values()) == pytest.approx(1.0)


def record(request_id: str, instance: str, offered: float) -> bytes:
    return (
        GatewayDemand(
            request_id=request_id, instance=instance, at=datetime(2026, 1, 1, tzinfo=UTC), window_s=30.0,
            offered_requests_per_second=1.0, offered_input_tokens_per_second=0.0,
            offered_output_tokens_per_second=offered,
        )
        .model_dump_json()
        .encode()
    )  # fmt: skip


async def test_the_watch_follows_the_other_instances_through_the_store() -> None:
    store = MemoryStore()
    await store.put(keys.gateway_demand("cr-1", "a"), record("cr-1", "a", 30.0))
    await store.put(keys.gateway_demand("cr-other", "b"), record("cr-other", "b", 999.0))  # another lane
    await store.put(keys.gateway_demand("cr-1", "bad"), b"{not a record")
    changes: list[int] = []
    watch = ShareWatch(store, "a", on_change=lambda: changes.append(1))
    await watch.start()
    try:
        assert watch.demand(LANE) == {"a": 30.0}
        assert watch.share(LANE) == 1.0
        lease = await store.grant_lease(10)
        await store.put(keys.gateway_demand("cr-1", "b"), record("cr-1", "b", 90.0), lease=lease)
        for _ in range(200):
            if watch.demand(LANE).get("b") == 90.0:
                break
            await asyncio.sleep(0)
        assert watch.share(LANE) == pytest.approx(0.5 / 1.25)  # weights 0.75 and 0.5 (floor)
        await store.revoke_lease(lease)  # b is gone: its figures with it
        for _ in range(200):
            if "b" not in watch.demand(LANE):
                break
            await asyncio.sleep(0)
        assert watch.share(LANE) == 1.0
        assert len(changes) >= 3
    finally:
        await watch.stop()


def admission(clock: FakeClock, share: float) -> Admission:
    return Admission(lambda lane: 0.0, settings=Settings(burst_s=1.0, spare_horizon_s=0.0), clock=clock,
                     share=lambda lane: share)  # fmt: skip


async def test_the_bucket_fills_at_the_instances_share() -> None:
    clock = FakeClock()
    half = admission(clock, 0.5)
    bucket = half.bucket(LANE)
    assert (bucket.rate, bucket.burst) == (50.0, 50.0)
    assert await half.admit(lambda: LANE, 50) is Verdict.GUARANTEED
    clock.advance(0.5)
    assert half.bucket(LANE).tokens == pytest.approx(25.0)  # refilled at the share, not the whole rate


async def test_a_smaller_share_caps_what_the_bucket_holds() -> None:
    clock = FakeClock()
    share = [1.0]
    gate = Admission(
        lambda lane: 0.0, settings=Settings(burst_s=1.0), clock=clock, share=lambda lane: share[0]
    )
    assert gate.bucket(LANE).tokens == 100.0
    share[0] = 0.25  # another instance joined with most of the demand
    bucket = gate.bucket(LANE)
    assert (bucket.rate, bucket.burst, bucket.tokens) == (25.0, 25.0, 25.0)


async def test_a_call_is_trued_up_to_the_tokens_it_was_served() -> None:
    clock = FakeClock()
    gate = admission(clock, 1.0)
    assert await gate.admit(lambda: LANE, 80) is Verdict.GUARANTEED  # charged its max_tokens
    assert gate.bucket(LANE).tokens == pytest.approx(20.0)
    gate.settle(LANE, charged=80, used=30)  # the replica produced 30: 50 back
    assert gate.bucket(LANE).tokens == pytest.approx(70.0)
    gate.settle(LANE, charged=10, used=200)  # (a replica that overran max_tokens) pays the excess
    assert gate.bucket(LANE).tokens == pytest.approx(-120.0)
    gate.settle(LANE, charged=500, used=0)  # a refund never overfills the bucket
    assert gate.bucket(LANE).tokens == pytest.approx(100.0)
