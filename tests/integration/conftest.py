"""Real parts for integration tests: one etcd per session, control planes on free loopback ports,
agents as real ``tokenfab agent`` processes and throwaway certificate authorities. The Ray world
(two local Ray clusters) belongs to the tests in tests/integration/rayworld/ (its conftest).

Credentials are automatic: ``control_plane()`` starts an instance with mutual TLS (a certificate
from the session's CA carrying ``spiffe://tokenfab/controlplane/...``), an operators file (admin
and viewer tokens) and the interceptor chain on, exactly as a deployment runs. ``agents()`` gives
each agent its node's certificate; ``dial(plane, who)`` opens a channel as an operator, a tenant
token or a bare client certificate. ``control_plane(secure=False)`` is the plaintext loopback
instance (every local caller is the local principal), for the few tests about that mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

import aetcd
import grpc
import pytest

from controlplane.api.server import ControlPlane
from controlplane.config import ControlPlaneConfig
from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.metrics import ControlPlaneMetrics
from controlplane.security import Issued, Kind, LocalCA
from tests.conftest import FIXTURES
from tokenfab.tls import ClientTLS

SMALL_FLEET = FIXTURES / "fleet-small.yaml"
FAST = {"heartbeat_interval_s": 0.2, "suspect_after_missed": 3, "lost_after_s": 1.5}


class Deployment:
    """The session's PKI and operator tokens (what ``tokenfab up`` or the chart would create)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = LocalCA.open(directory / "ca")
        self.rogue = LocalCA.open(directory / "rogue", name="rogue-ca")  # a CA nobody trusts
        self.admin_token = "admin-" + secrets.token_urlsafe(16)
        self.viewer_token = "viewer-" + secrets.token_urlsafe(16)
        self.operators_file = directory / "operators.yaml"
        self.operators_file.write_text(
            "operators:\n"
            f"  - {{name: ops, role: admin, token: {self.admin_token}}}\n"
            f"  - {{name: watcher, role: viewer, token: {self.viewer_token}}}\n"
        )

    def issue(self, kind: Kind, name: str, *, rogue: bool = False) -> Issued:
        return (self.rogue if rogue else self.ca).issue(kind, name)

    def tls(self, kind: Kind = Kind.CLIENT, name: str = "tests", *, rogue: bool = False) -> ClientTLS:
        issued = self.issue(kind, name, rogue=rogue)
        return ClientTLS(self.ca.cert_file, issued.cert, issued.key)


SECURE: dict[str, Deployment] = {}  # address -> the deployment whose mTLS it serves


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return Deployment(tmp_path_factory.mktemp("pki"))


def dial(
    plane: ControlPlane | str,
    who: str = "admin",
    *,
    tls: ClientTLS | None = None,
) -> grpc.aio.Channel:
    """A channel to ``plane`` as ``who``: "admin", "viewer", "anonymous" (a client certificate,
    no token) or a literal bearer token (a tenant's). ``tls`` overrides the certificate."""
    from controlplane.cli.client import channel

    address = plane if isinstance(plane, str) else plane.config.address
    found = SECURE.get(address)
    token: str | None
    if who == "admin":
        token = found.admin_token if found else None
    elif who == "viewer":
        token = found.viewer_token if found else None
    elif who == "anonymous":
        token = None
    else:
        token = who
    if tls is None and found is not None:
        tls = found.tls()
    if tls is None:
        from controlplane.cli.client import bearer

        return grpc.aio.insecure_channel(address, interceptors=bearer(token) if token else [])
    return channel(address, tls, token=token) if token else _plain_tls(address, tls)


def cli_credentials(plane: ControlPlane, who: str = "admin") -> tuple[list[str], dict[str, str]]:
    """``tokenfab`` flags and environment that make a CLI child process ``who`` (as ``dial``)."""
    found = SECURE.get(plane.config.address)
    if found is None:
        return [], {}
    tls = found.tls()
    token = {"admin": found.admin_token, "viewer": found.viewer_token}.get(who, who)
    flags = ["--tls-ca", str(tls.ca_file), "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file)]
    return flags, {"TOKENFAB_TOKEN": token}


def _plain_tls(address: str, tls: ClientTLS) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, tls.credentials(), options=tls.channel_options())


@pytest.fixture(scope="session")
async def etcd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdProcess]:
    base = tmp_path_factory.mktemp("etcd")
    proc = EtcdProcess(base / "data", log_file=base / "etcd.log")
    await proc.start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
async def _clean_keyspace(request: pytest.FixtureRequest) -> None:
    if "etcd" not in request.fixturenames:
        return
    proc: EtcdProcess = request.getfixturevalue("etcd")
    async with aetcd.Client(host=proc.host, port=proc.client_port) as client:
        await client.delete_prefix(b"/")


ControlPlaneFactory = Callable[..., Awaitable[ControlPlane]]


def secure_settings(deployment: Deployment, port: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """mTLS with a control-plane identity and the operators file, unless the test chose TLS itself."""
    if "tls_cert" in overrides:
        return {}
    issued = deployment.issue(Kind.CONTROLPLANE, f"cp-{port}")
    settings: dict[str, Any] = {
        "tls_cert": issued.cert, "tls_key": issued.key, "tls_client_ca": deployment.ca.cert_file,
    }  # fmt: skip
    if "operators_file" not in overrides:
        settings["operators_file"] = deployment.operators_file
    return settings


@pytest.fixture
async def control_plane(etcd: EtcdProcess, deployment: Deployment) -> AsyncIterator[ControlPlaneFactory]:
    """Factory: ``await control_plane(port=..., secure=True, **config)`` starts one (mTLS and the
    interceptor chain's credentials by default); all are stopped at the end."""
    started: list[ControlPlane] = []

    async def start(*, port: int | None = None, secure: bool = True, **overrides: Any) -> ControlPlane:
        port = port or free_port()
        extra = secure_settings(deployment, port, overrides) if secure else {}
        local = {} if secure else {"insecure_local_admin": True}  # plaintext: loopback callers are admin
        settings = {**FAST, **extra, **local, **overrides}
        config = ControlPlaneConfig(address=f"127.0.0.1:{port}", etcd_endpoint=etcd.endpoint, **settings)
        plane = ControlPlane(config, metrics=ControlPlaneMetrics())
        await plane.start()
        started.append(plane)
        if extra:
            SECURE[config.address] = deployment
        return plane

    yield start
    for plane in started:
        SECURE.pop(plane.config.address, None)
        await plane.stop(grace_s=0.1)


class AgentProcess:
    """A real ``tokenfab agent --backend simulated`` child process."""

    def __init__(self, node: str, address: str, log_dir: Path, extra: list[str] | None = None) -> None:
        self.node = node
        self.address = address
        self.log = log_dir / f"agent-{node}.log"
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        cmd = [
            sys.executable, "-m", "controlplane.cli.main", "agent", "--backend", "simulated",
            "--node", self.node, "--address", self.address, "--fleet", str(SMALL_FLEET),
            "--sim-epoch", "1767225600", *self.extra,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def output(self, lines: int = 8) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def agent_tls_flags(node: str, address: str) -> list[str]:
    """The node's own certificate when an address it dials serves the session's mTLS (the others
    may be relays to it)."""
    found = {SECURE[a.strip()] for a in address.split(",") if a.strip() in SECURE}
    if not found:
        return []
    deployment = found.pop()
    issued = deployment.issue(Kind.NODE, node)
    return [
        "--tls-ca",
        str(deployment.ca.cert_file),
        "--tls-cert",
        str(issued.cert),
        "--tls-key",
        str(issued.key),
    ]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []

    def make(node: str, address: str, extra: list[str] | None = None) -> AgentProcess:
        flags = [] if "--tls-ca" in (extra or []) else agent_tls_flags(node, address)
        agent = AgentProcess(node, address, tmp_path, [*flags, *(extra or [])]).start()
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


T = TypeVar("T")


@overload
async def wait_for(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
    detail: Callable[[], object] | None = ...,
) -> T: ...


@overload
async def wait_for(
    probe: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
    detail: Callable[[], object] | None = ...,
) -> T: ...


async def wait_for(
    probe: Callable[[], Any],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
    detail: Callable[[], object] | None = None,
) -> Any:
    """The one "eventually" of the integration tests: poll ``probe`` (plain or async) every
    ``interval`` seconds until it returns something truthy, and return that value.

    An exception from the probe (an assertion that the process under test is still alive) ends
    the wait at once. On timeout the error says what was awaited and, with ``detail``, what was
    seen instead. How long the wait took is never asserted on: machines are noisy.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            seen = f"; last: {got!r}" + (f"; saw: {detail()}" if detail is not None else "")
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{seen}")
        await asyncio.sleep(interval)


def eventually(
    probe: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
    detail: Callable[[], object] | None = None,
) -> T:
    """``wait_for`` for a test that is not a coroutine (one that drives child processes)."""
    return asyncio.run(wait_for(probe, timeout=timeout, interval=interval, what=what, detail=detail))


def metric_value(metric: Any, **labels: str) -> float:
    """A metric's current value read as a scrape sees it (``collect()``), not via the client's
    private ``_value``. ``labels`` must name every label of the metric (``labels()`` checks them;
    a child never touched reads 0, as on a /metrics page)."""
    if labels:
        metric.labels(**labels)
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == labels and not sample.name.endswith("_created"):
                return float(sample.value)
    raise AssertionError(f"no sample of {metric!r} with labels {labels}")


def state_of(plane: ControlPlane, node: str) -> str | None:
    assert plane.registry is not None
    with contextlib.suppress(Exception):
        return plane.registry.get(node).state.value
    return None
