"""Scale from zero, end to end through Ray: the real gateway (in-process, on the shared etcd), a
control plane reconciling onto the package's Ray world (this package's conftest), and the
live autoscaler with a short scale-to-zero idle time."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import aiohttp
import grpc
import pytest

from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.gateway import Gateway, GatewayConfig
from tests.integration.conftest import ControlPlaneFactory, wait_for
from tests.integration.rayworld.conftest import RayWorld
from tests.integration.rayworld.test_ray_replicas import (
    TOKEN,
    actors,
    cancel_and_wait_gone,
    live_replicas,
    spec,
    start_plane,
    wait_ready,
)
from tokenfab.v1 import autoscaler_pb2, autoscaler_pb2_grpc, capacity_pb2, capacity_pb2_grpc

pytestmark = pytest.mark.timeout(300)


async def test_a_request_scaled_to_zero_wakes_on_its_first_call_through_the_gateway(
    ray_world: RayWorld, control_plane: ControlPlaneFactory, etcd: EtcdProcess
) -> None:
    """Scale from zero, end to end: a request that opted in serves one call through the real
    gateway, goes idle, and the live autoscaler (a 3 s idle time) scales it to zero: its replica
    drains and its Ray actor stops. The next call waits in the gateway's queue; the gateway's
    demand shows the queued call, the autoscaler wakes the request (its decision says why), the
    reconciler places a new replica on the Ray cluster, and the queued call is answered by it."""
    plane = await start_plane(
        ray_world, control_plane, autoscale_interval_s=1.0, autoscale_zero_after_s=3.0,
        autoscale_down_delay_s=3600,
    )  # fmt: skip
    async with grpc.aio.insecure_channel(plane.config.address) as channel:
        stub = capacity_pb2_grpc.CapacityServiceStub(channel)
        scaler = autoscaler_pb2_grpc.AutoscalerServiceStub(channel)
        sleepy = spec(1000)
        sleepy.allowed_accelerators.append("BR104")
        sleepy.autoscaling.CopyFrom(capacity_pb2.AutoscalingSpec(enabled=True, scale_to_zero=True))
        created = await stub.Create(capacity_pb2.CreateCapacityRequest(spec=sleepy), metadata=TOKEN)
        await wait_ready(stub, created.id)
        first = {r.id for r in await live_replicas(stub, created.id)}
        gateway = Gateway(
            GatewayConfig(
                listen=f"127.0.0.1:{free_port()}", tenants_file=ray_world.tenants, etcd_endpoint=etcd.endpoint,
                demand_publish_s=0.3, demand_window_s=2.0, cold_start_wait_s=240,
            )
        )  # fmt: skip
        await gateway.start()
        try:
            call = {"model": sleepy.model, "prompt": "wake up " * 20, "max_tokens": 16}
            status, _ = await complete(gateway, call)
            assert status == 200  # the demand the idle time is counted from

            async def decisions(action: str, reason: str) -> list[Any]:
                listed = await scaler.ListDecisions(
                    autoscaler_pb2.ListDecisionsRequest(request_id=created.id, action=action)
                )
                return [d for d in listed.decisions if d.applied and reason in d.reason]

            downs = await wait_for(
                functools.partial(decisions, "scale_down", "scale to zero"), timeout=90, interval=0.5,
                what="the idle request scaled to zero",
            )  # fmt: skip

            async def at_zero() -> bool:
                lane = gateway.routes.lane("ray", sleepy.model) if gateway.routes else None
                return (
                    lane is not None and not lane.backends
                    and not await live_replicas(stub, created.id)
                    and not first & set(await actors(ray_world))
                )  # fmt: skip

            await wait_for(at_zero, timeout=90, interval=0.3, what="no replica, no actor, an empty lane")
            assert downs[-1].desired_replicas == 0 and downs[-1].target_output_tokens_per_second == 0

            answer = asyncio.create_task(complete(gateway, call))
            admission = gateway.admission
            assert admission is not None
            await wait_for(
                lambda: answer.done() or admission.waiting.get(("ray", sleepy.model), 0) == 1,
                timeout=30, what="the first call queued in the gateway",
            )  # fmt: skip
            assert not answer.done(), "answered with no replica"  # it is queued, not refused
            wakes = await wait_for(
                functools.partial(decisions, "scale_up", "waking from zero"), timeout=60, interval=0.3,
                what="the autoscaler waking the request",
            )  # fmt: skip
            status, body = await asyncio.wait_for(answer, timeout=180)
        finally:
            await gateway.stop()
        assert status == 200 and body["usage"]["completion_tokens"] == 16, body
        wake = wakes[0]
        assert wake.current_replicas == 0 and wake.desired_replicas >= 1
        assert wake.target_output_tokens_per_second == 1000 and "1 call(s) queued" in wake.reason
        now_live = await live_replicas(stub, created.id)
        assert now_live and not first & {r.id for r in now_live}  # a new replica, on Ray
        running = await actors(ray_world)
        assert all(running[r.id].state == "ready" for r in now_live if r.state == "Ready")
        await cancel_and_wait_gone(stub, ray_world, created.id, {r.id for r in now_live})


async def complete(gateway: Gateway, body: dict[str, Any]) -> tuple[int, Any]:
    """One completion through the gateway as tenant ``ray``."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            gateway.base_url + "/completions", json=body, headers={"Authorization": "Bearer ray-token"}
        ) as reply,
    ):
        return reply.status, await reply.json()
