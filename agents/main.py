"""Agent entry point (``tokenfab agent``): build the backend and identity, run until signalled."""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agents.discovery.base import Backend, DiscoveredDevice, NotPresent, ToolFailed
from agents.discovery.biren import BirenBackend
from agents.discovery.registry import backend_for, detect
from agents.discovery.simulated import FleetFileError, SimulatedBackend, load_fleet
from agents.lease import MetadataNotices
from agents.raylet import Raylet, RayletSpec
from agents.runtime import Agent, AgentConfigError, LeaseSpec, NodeIdentity
from tokenfab.logs import get_logger
from tokenfab.parent import exit_with_parent
from tokenfab.tls import ClientTLS, TLSConfigError

log = get_logger("agent")


@dataclass(frozen=True)
class AgentOptions:
    backend: str = "auto"
    node_id: str | None = None
    cluster: str = "default"
    region: str = ""
    fleet: Path | None = None
    sim_epoch: float | None = None
    biren_model: str = "BR104"
    lease_provider: str | None = None
    lease_id: str | None = None
    lease_end: str | None = None
    lease_price: float = 0.0
    preemptible: bool = False
    lease_notice_url: str | None = None  # poll for preemption notices (see agents/lease.py)
    lease_notice_interval_s: float = 5.0
    lease_notice_flag_s: float = 30.0
    lease_notice_headers: dict[str, str] = field(default_factory=dict)
    address: str = "127.0.0.1:50051"
    tls: ClientTLS | None = None
    ray_address: str | None = None  # join this Ray cluster (GCS host:port) as a raylet
    ray_temp_dir: Path | None = None
    ray_node_ip: str = "127.0.0.1"  # the raylet's address for other Ray nodes (Kubernetes: the pod's IP)


def _static_lease(options: AgentOptions) -> LeaseSpec | None:
    if options.lease_provider is None and options.lease_end is None:
        return None
    if not (options.lease_provider and options.lease_end):
        raise ValueError("lease: --lease-provider and --lease-end are required together")
    try:
        end = datetime.fromisoformat(options.lease_end)
    except ValueError:
        raise ValueError(f"lease_end: not an ISO 8601 time: {options.lease_end!r}") from None
    if end.tzinfo is None:
        raise ValueError("lease_end: must carry a timezone (e.g. 2026-12-01T00:00:00Z)")
    return LeaseSpec(
        provider=options.lease_provider,
        lease_id=options.lease_id or f"{options.node_id or socket.gethostname()}-lease",
        start=datetime.now(UTC),
        end=end,
        price_per_accelerator_hour=options.lease_price,
        preemptible=options.preemptible,
    )


def build(options: AgentOptions) -> tuple[Backend, NodeIdentity, list[DiscoveredDevice]]:
    """Backend and identity from the options; ValueError/NotPresent/FleetFileError when impossible."""
    if options.backend == "simulated":
        if not options.node_id:
            raise ValueError("node: --node is required with the simulated backend")
        fleet = {n.node_id: n for n in load_fleet(options.fleet)}
        sim = fleet.get(options.node_id)
        if sim is None:
            raise ValueError(
                f"node: {options.node_id!r} is not in the fleet file ({', '.join(sorted(fleet))})"
            )
        backend = SimulatedBackend(sim)
        lease = None
        anchor = datetime.fromtimestamp(options.sim_epoch, UTC) if options.sim_epoch else None
        window = backend.lease_window(anchor)
        if window is not None and sim.lease is not None:
            lease = LeaseSpec(
                provider=sim.lease.provider,
                lease_id=sim.lease.lease_id,
                start=window[0].replace(microsecond=0),
                end=window[1].replace(microsecond=0),
                price_per_accelerator_hour=sim.lease.price_per_accelerator_hour,
                preemptible=sim.lease.preemptible,
            )
        return backend, NodeIdentity(sim.node_id, sim.cluster, sim.region, sim.labels, lease), []
    found: list[DiscoveredDevice] = []
    if options.backend == "auto":
        real, found = detect()  # discovery done once: the agent starts from these devices
    elif options.backend == "biren":
        real = BirenBackend(model=options.biren_model)
    else:
        real = backend_for(options.backend)
    node_id = options.node_id or socket.gethostname().lower()
    return real, NodeIdentity(node_id, options.cluster, options.region, {}, _static_lease(options)), found


def run_agent(options: AgentOptions) -> tuple[int, str]:
    """Run until SIGINT/SIGTERM. Returns ``(exit code, message)``: 0 on a clean stop, 2 for a
    configuration the control plane rejects, 3 when no devices are present."""
    try:
        backend, identity, devices = build(options)
        notices = (
            MetadataNotices(
                options.lease_notice_url, interval_s=options.lease_notice_interval_s,
                flag_notice_s=options.lease_notice_flag_s, headers=options.lease_notice_headers,
            )
            if options.lease_notice_url
            else None
        )  # fmt: skip
    except (ValueError, FleetFileError) as exc:
        return 2, str(exc)
    except (NotPresent, ToolFailed) as exc:
        return 3, f"no devices: {exc}"

    async def main() -> tuple[int, str]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watchdog = asyncio.create_task(exit_with_parent(stop))
        found = devices
        raylet_task: asyncio.Task[None] | None = None
        if options.ray_address:
            found = found or await asyncio.to_thread(backend.discover)
            if not found:
                return 3, "no devices: nothing to offer Ray"
            spec = RayletSpec(
                address=options.ray_address,
                node_id=identity.node_id,
                cluster=identity.cluster,
                vendor=backend.vendor,
                accelerator=found[0].model,
                devices=len(found),
                temp_dir=options.ray_temp_dir
                or Path(tempfile.gettempdir()) / f"tokenfab-ray-{identity.node_id}",
                node_ip=options.ray_node_ip,
            )
            raylet_task = asyncio.create_task(Raylet(spec).run(stop))
        agent = Agent(
            backend, identity, address=options.address, tls=options.tls, devices=found, notices=notices
        )
        log.info("agent.starting", node=identity.node_id, backend=backend.name, address=options.address)
        try:
            await agent.run(stop)
        except AgentConfigError as exc:
            return 2, str(exc)
        except (NotPresent, ToolFailed) as exc:
            return 3, f"no devices: {exc}"
        except TLSConfigError as exc:
            return 2, str(exc)
        finally:
            stop.set()
            if raylet_task is not None:
                await raylet_task
            watchdog.cancel()
        log.info("agent.stopped", node=identity.node_id, heartbeats=agent.status.heartbeats_sent)
        return 0, ""

    return asyncio.run(main())


__all__ = ["AgentOptions", "build", "run_agent"]
