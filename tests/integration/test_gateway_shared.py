"""Two real gateway processes on one etcd share one reservation: each fills its bucket at its share
of the lane's reserved tokens/s, following the other's published demand through etcd, so together
they guarantee no more than the reservation (counted in 200s and 429s, not in time)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from controlplane.embedded.etcd import EtcdProcess
from controlplane.gateway.demand import read_demand
from controlplane.store.etcd import EtcdStore
from tests.integration.conftest import wait_for
from tests.integration.test_gateway import (
    MODEL,
    GatewayProcess,
    Replica,
    gateway_for,
    post,
    replicas,
    setup_lane,
    store,
)

pytestmark = pytest.mark.integration
__all__ = ["replicas", "store"]  # fixtures


async def test_two_instances_guarantee_one_reservation_between_them(
    etcd: EtcdProcess, tmp_path: Path, store: EtcdStore, replicas: list[Replica]
) -> None:
    # 10 tokens/s reserved and 100 s of burst: one bucket of 1,000 tokens, ten calls of 100 tokens.
    # No best effort (spare horizon 0) and a 0.5 s TTFT target: a call the bucket cannot pay for
    # within it is refused at once (the refill is 10 tokens/s: a tenth of a call a second).
    flags = ("--burst", "100", "--spare-horizon", "0")
    gateways: list[GatewayProcess] = []
    try:
        for name in ("gw-a", "gw-b"):
            gateways.append(await gateway_for(etcd, tmp_path, *flags, "--instance", name))
        await setup_lane(store, gateways[0], replicas, reserved=10, ttft_ms=500)
        await wait_for(lambda: models_ready(gateways[1]), timeout=20, what="the second gateway's lane")
        async with aiohttp.ClientSession() as s:
            small = {"model": MODEL, "prompt": "warm", "max_tokens": 5}
            for gw in gateways:  # both offer demand: each sees the other's through etcd
                for _ in range(2):
                    assert (await post(s, gw, "/v1/completions", small))[0] == 200

            async def both_published() -> bool:
                offered = {d.instance: d.offered_output_tokens_per_second for d in await read_demand(store)}
                return offered.keys() == {"gw-a", "gw-b"} and min(offered.values()) > 0

            await wait_for(both_published, timeout=20, what="both instances' demand in etcd")
            big = {"model": MODEL, "prompt": "burst", "max_tokens": 100}
            answers = await asyncio.gather(
                *(post(s, gw, "/v1/completions", big) for gw in gateways for _ in range(10))
            )
        statuses = [status for status, _ in answers]
        assert set(statuses) <= {200, 429}, statuses
        served = statuses.count(200)
        # one reservation: at most the one bucket's ten calls between the two (each instance alone
        # would have taken ten); each holds about half, less its warm-up calls
        assert 8 <= served <= 10, statuses
        assert statuses.count(429) == 20 - served
        for gw in gateways:
            assert await gw.metric("tokenfab_gateway_reservation_share", tenant="alpha") == pytest.approx(
                0.5, abs=0.15
            )
            assert await gw.metric("tokenfab_gateway_admitted_total", cls="best_effort") == 0
    finally:
        for gw in gateways:
            gw.stop()


async def models_ready(gw: GatewayProcess) -> bool:
    headers = {"Authorization": "Bearer alpha-secret-token"}
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/v1/models", headers=headers) as r:
        data = (await r.json())["data"] if r.status == 200 else []
    return any(m["id"] == MODEL and m["replicas"] == 1 for m in data)
