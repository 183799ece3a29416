"""What ``tokenfab up`` shows while it runs: a live fleet table, or log lines when headless."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from controlplane.api.capacity_service import record_to_pb, replica_to_pb
from controlplane.api.convert import node_summary, node_to_pb
from controlplane.api.server import ControlPlane
from controlplane.capacity.tenants import Tenant
from controlplane.cli.autoscaler import history_table, status_table
from controlplane.cli.requests import _summary as request_summary
from controlplane.cli.requests import replica_summary
from controlplane.cli.views import nodes_table, replicas_table, requests_table, state_counts
from controlplane.embedded.up import DEMO_TENANT, Embedded
from controlplane.fleet.registry import NodeRegistry
from tokenfab.logs import get_logger

log = get_logger("up")


def summaries(registry: NodeRegistry) -> list[dict[str, Any]]:
    return [node_summary(node_to_pb(view)) for view in registry.nodes()]


async def capacity_views(plane: ControlPlane) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo tenant's requests and replicas, as the CLI would print them."""
    if plane.capacity is None:
        return [], []
    tenant = Tenant(DEMO_TENANT)
    reconciler = plane.reconciler
    requests = [request_summary(record_to_pb(r)) for r in await plane.capacity.list(tenant)]
    replicas = [
        replica_summary(replica_to_pb(r, reconciler.observed.get(r.id) if reconciler else None))
        for r in await plane.capacity.replicas(tenant)
    ]
    return requests, replicas


async def autoscaler_views(
    plane: ControlPlane, limit: int = 6
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The autoscaler's status and its newest ``limit`` decisions that changed something."""
    from controlplane.api.autoscaler_service import decision_to_pb, read_decisions, read_status
    from controlplane.cli.autoscaler import decision_summary, status_summary

    status = status_summary(await read_status(plane.store))
    decisions = sorted(await read_decisions(plane.store, ""), key=lambda d: d.at)
    changes = [d for d in decisions if d.action != "hold"][-limit:]
    return status, [decision_summary(decision_to_pb(d)) for d in changes]


def gateway_line(embedded: Embedded, last: dict[str, float]) -> str:
    """The gateway's traffic since the previous call: calls/s, queue, refusals, retries."""
    gateway = embedded.gateway
    if gateway is None:
        return ""
    now, totals = time.monotonic(), gateway.metrics.totals()
    span = max(1e-3, now - last.get("at", now - 1.0))
    rate = (totals.get("arrivals", 0.0) - last.get("arrivals", 0.0)) / span
    last.update(totals, at=now)
    return (
        f"gateway {gateway.base_url}: {rate:,.1f} calls/s, queue {totals.get('queue_length', 0):.0f}, "
        f"429 {totals.get('responses_429', 0):.0f}, 503 {totals.get('responses_503', 0):.0f}, "
        f"retries {totals.get('retries', 0):.0f}, cut streams {totals.get('stream_cuts', 0):.0f}"
    )


async def run_live(embedded: Embedded, stop: asyncio.Event) -> None:
    plane, agents = embedded.plane, embedded.agents
    assert plane.registry is not None
    registry = plane.registry
    events: deque[str] = deque(maxlen=8)
    started = time.monotonic()
    changes = registry.subscribe()
    last_state: dict[str, str] = {}

    async def follow() -> None:
        async for _kind, view in changes:
            old = last_state.get(view.node_id)
            if old != view.state.value:
                stamp = time.strftime("%H:%M:%S")
                change = f"{old or 'new'} -> {view.state.value}"
                events.append(f"{stamp}  {view.node_id}: {change}  {view.record.state_reason}")
                last_state[view.node_id] = view.state.value

    follower = asyncio.create_task(follow())
    console = Console()
    traffic: dict[str, float] = {}
    try:
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while not stop.is_set():
                nodes = summaries(registry)
                elapsed = time.monotonic() - started
                exited = agents.exited()
                header = Text.assemble(
                    ("tokenfab up", "bold"),
                    f"  control plane {plane.config.address}",
                    f"  etcd {plane.config.etcd_endpoint}  {elapsed:4.0f}s  ",
                    ("Ctrl-C to stop", "dim"),
                )
                requests, replicas = await capacity_views(plane)
                served = sum(r["output_tokens_per_second"] for r in replicas if r["state"] == "Ready")
                load = embedded.load
                status, scaling = await autoscaler_views(plane)
                parts: list[Any] = [
                    header,
                    requests_table(requests, title="capacity requests"),
                    replicas_table(replicas, title="replicas"),
                    Text(
                        f"serving {served:,.0f} output tokens/s"
                        + (
                            f"  (demo demand offered: {load.offered_tps:,.0f} tokens/s; "
                            f"{load.completed} completions, {load.rejected} refused, {load.errors} errors, "
                            f"{load.shed} shed)"
                            if load
                            else ""
                        ),
                        style="bold",
                    ),
                    Text(gateway_line(embedded, traffic)),
                    status_table(status),
                    history_table(scaling) if scaling else Text("no scaling yet", style="dim"),
                    nodes_table(nodes, title="fleet"),
                    Text(state_counts(nodes)),
                ]
                if exited:
                    parts.append(Text(f"agents exited: {exited}", style="red"))
                if events:
                    parts.append(Text("recent transitions:\n" + "\n".join(events), style="dim"))
                live.update(Group(*parts))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
        changes.close()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    console.print("stopping: load, agents and raylets, control plane, executors, Ray, etcd ...")


async def run_headless(embedded: Embedded, stop: asyncio.Event) -> None:
    plane, agents = embedded.plane, embedded.agents
    assert plane.registry is not None
    registry = plane.registry
    reported_exits: set[str] = set()
    traffic: dict[str, float] = {}
    while not stop.is_set():
        if embedded.gateway is not None:
            log.info("up.gateway", traffic=gateway_line(embedded, traffic))
        nodes = summaries(registry)
        log.info("up.fleet", summary=state_counts(nodes))
        requests, replicas = await capacity_views(plane)
        for request in requests:
            log.info(
                "up.request", id=request["id"], phase=request["phase"],
                ready_tps=request["ready_output_tokens_per_second"], replicas=len(request["replicas"]),
            )  # fmt: skip
        status, _ = await autoscaler_views(plane, limit=1)
        for entry in status["requests"]:
            log.info(
                "up.autoscaler", mode=status["mode"], request=entry["request_id"], replicas=entry["replicas"],
                target_tps=entry["target_output_tokens_per_second"],
                offered_tps=round(embedded.load.offered_tps) if embedded.load else None,
                last=(entry["last_decision"] or {}).get("reason"),
            )  # fmt: skip
        ready = [r for r in replicas if r["state"] == "Ready"]
        if replicas:
            log.info(
                "up.replicas", total=len(replicas), ready=len(ready),
                vendors=sorted({r["vendor"] for r in ready}),
                output_tps=round(sum(r["output_tokens_per_second"] for r in ready), 1),
            )  # fmt: skip
        for node_id, code in agents.exited().items():
            if node_id not in reported_exits:
                log.error("up.agent_exited", node=node_id, code=code)
                reported_exits.add(node_id)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5.0)
