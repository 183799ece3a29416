"""TLS and mutual TLS between agents and the control plane, with throwaway CAs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from agents.discovery.simulated import SimulatedBackend, load_fleet
from agents.runtime import Agent, NodeIdentity
from controlplane.embedded.etcd import EtcdProcess
from controlplane.security import Kind
from tests.integration.certs import TestCA, cn_only_certificate
from tests.integration.conftest import SMALL_FLEET, ControlPlaneFactory, Deployment, state_of, wait_for
from tests.integration.helpers import register_request
from tokenfab.tls import ClientTLS, TLSConfigError, client_channel
from tokenfab.v1 import agent_pb2_grpc, fleet_pb2, fleet_pb2_grpc


async def register_with(address: str, tls: ClientTLS | None, node: str) -> None:
    async with client_channel(address, tls) as channel:
        await agent_pb2_grpc.AgentServiceStub(channel).Register(register_request(node), timeout=5)


async def test_mutual_tls(control_plane: ControlPlaneFactory, deployment: Deployment) -> None:
    plane = await control_plane()  # mTLS with the session's CA (the fixture's default)
    address = plane.config.address
    await register_with(address, deployment.tls(Kind.NODE, "mtls-ok"), "mtls-ok")

    refused = [
        ("no client certificate", ClientTLS(deployment.ca.cert_file)),
        ("certificate from another CA", deployment.tls(Kind.NODE, "mtls-bad", rogue=True)),
        ("plaintext", None),
    ]
    for what, tls in refused:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register_with(address, tls, "mtls-bad")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, what  # the handshake fails
    assert plane.registry is not None
    assert [v.node_id for v in plane.registry.nodes()] == ["mtls-ok"]


async def test_a_certificate_without_a_tokenfab_identity_is_refused(
    control_plane: ControlPlaneFactory, deployment: Deployment
) -> None:
    """Signed by the deployment's CA but carrying no spiffe://tokenfab/ URI SAN: UNAUTHENTICATED."""
    plane = await control_plane()
    legacy = cn_only_certificate(deployment.ca.dir, "agent-1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await register_with(
            plane.config.address, ClientTLS(deployment.ca.cert_file, legacy.cert, legacy.key), "legacy"
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "URI SAN" in (info.value.details() or "")


async def test_real_agent_over_mtls(control_plane: ControlPlaneFactory, deployment: Deployment) -> None:
    plane = await control_plane()
    node = next(n for n in load_fleet(SMALL_FLEET) if n.node_id == "t-biren-0")
    agent = Agent(
        SimulatedBackend(node),
        NodeIdentity(node.node_id, node.cluster),
        address=plane.config.address,
        tls=deployment.tls(Kind.NODE, node.node_id),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await wait_for(lambda: state_of(plane, "t-biren-0") == "ready", what="ready over mTLS")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def test_server_tls_without_client_auth_admits_no_anonymous_agent(
    control_plane: ControlPlaneFactory, deployment: Deployment
) -> None:
    server = deployment.issue(Kind.CONTROLPLANE, "server-only")
    plane = await control_plane(tls_cert=server.cert, tls_key=server.key)
    with pytest.raises(grpc.aio.AioRpcError) as info:  # encrypted, but nobody in particular
        await register_with(plane.config.address, ClientTLS(deployment.ca.cert_file), "tls-anon")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "AgentService/Register" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:  # client does not trust the server's CA
        await register_with(plane.config.address, ClientTLS(deployment.rogue.cert_file), "tls-bad")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_bad_tls_files_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="tls_ca"):
        ClientTLS(tmp_path / "missing.pem").credentials()
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello")
    with pytest.raises(TLSConfigError, match="not a PEM"):
        ClientTLS(not_pem).credentials()
    with pytest.raises(TLSConfigError, match="tls_cert/tls_key"):
        ClientTLS(not_pem, cert_file=not_pem).credentials()


def _pair(issued: object) -> tuple[Path, Path]:
    return issued.cert, issued.key  # type: ignore[attr-defined]


async def test_control_plane_talks_to_etcd_over_mutual_tls(tmp_path: Path) -> None:
    """An external etcd with client-certificate auth (what the chart's etcd.external.tlsSecret
    mounts): the control plane stores and serves through it; a client without a certificate is
    refused by etcd."""
    from controlplane.api.server import ControlPlane
    from controlplane.config import ControlPlaneConfig
    from controlplane.embedded.etcd import EtcdProcess, free_port
    from controlplane.store.base import StoreUnavailable
    from controlplane.store.etcd import EtcdStore
    from tokenfab.tls import ClientTLS, ServerTLS

    ca = TestCA(tmp_path / "etcd-ca")
    server, client = ca.issue("etcd-server", server=True), ca.issue("tokenfab-cp", server=False)
    etcd = EtcdProcess(tmp_path / "etcd", tls=ServerTLS(server.cert, server.key, ca.cert_file))
    await etcd.start()
    try:
        plane = ControlPlane(
            ControlPlaneConfig(
                address=f"127.0.0.1:{free_port()}", etcd_endpoint=etcd.endpoint, etcd_tls_ca=ca.cert_file,
                etcd_tls_cert=client.cert, etcd_tls_key=client.key,
            )
        )  # fmt: skip
        await plane.start()
        try:
            await plane.store.put("/tokenfab/v1/tls-probe", b"ok")
            assert (await plane.store.get("/tokenfab/v1/tls-probe")).value == b"ok"  # type: ignore[union-attr]
        finally:
            await plane.stop(grace_s=0.1)
        anonymous = EtcdStore(etcd.host, etcd.client_port, timeout_s=2.0, tls=ClientTLS(ca.cert_file))
        with pytest.raises(StoreUnavailable):
            await anonymous.connect()  # no client certificate: etcd refuses the handshake
        await anonymous.close()
    finally:
        etcd.stop()


# -- no implicit local admin -------------------------------------------------------------------


async def plaintext_calls(address: str) -> tuple[grpc.StatusCode, grpc.StatusCode]:
    """ListNodes (an admin read) and Register (an agent write) from loopback, without credentials."""
    codes = []
    async with grpc.aio.insecure_channel(address) as channel:
        for call in (
            fleet_pb2_grpc.FleetServiceStub(channel).ListNodes(fleet_pb2.ListNodesRequest(), timeout=10),
            agent_pb2_grpc.AgentServiceStub(channel).Register(register_request("local-1"), timeout=10),
        ):
            try:
                await call
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
    return codes[0], codes[1]


async def test_a_plaintext_loopback_caller_is_nobody_unless_the_plane_opts_in(
    control_plane: ControlPlaneFactory,
) -> None:
    """Any process of any user on the host reaches a loopback port: by default it is
    UNAUTHENTICATED; only --insecure-local-admin makes it the local admin, said at start."""
    closed = await control_plane(secure=False, insecure_local_admin=False)  # the default
    assert closed.config.insecure_local_admin is False
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert await plaintext_calls(closed.config.address) == (unauthenticated, unauthenticated)
    with capture_logs() as logs:
        opened = await control_plane(secure=False)  # the fixture's plaintext mode passes the flag
    assert opened.config.insecure_local_admin
    assert await plaintext_calls(opened.config.address) == (grpc.StatusCode.OK, grpc.StatusCode.OK)
    warned = [e for e in logs if e["event"] == "security.insecure_local_admin"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning" and warned[0]["effective"] is True
    assert warned[0]["component"] == "controlplane" and warned[0]["address"] == opened.config.address


def test_the_local_admin_is_off_unless_configured() -> None:
    from controlplane.config import ControlPlaneConfig

    assert ControlPlaneConfig().insecure_local_admin is False


async def test_a_plaintext_loopback_executor_admits_nobody_unless_it_opts_in() -> None:
    from controlplane.embedded.etcd import free_port
    from controlplane.executor.service import executor_server
    from tests.integration.authz_matrix import EmptyCluster
    from tokenfab.v1 import executor_pb2, executor_pb2_grpc

    async def inventory(insecure_local_admin: bool) -> grpc.StatusCode:
        server, _ = executor_server(EmptyCluster(), insecure_local_admin=insecure_local_admin)
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = executor_pb2_grpc.ExecutorServiceStub(channel)
                await stub.Inventory(executor_pb2.InventoryRequest(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            await server.stop(0.1)
        return grpc.StatusCode.OK

    assert await inventory(False) == grpc.StatusCode.UNAUTHENTICATED
    assert await inventory(True) == grpc.StatusCode.OK


async def test_the_cli_takes_the_local_admin_from_its_environment(etcd: EtcdProcess, tmp_path: Path) -> None:
    """``tokenfab controlplane`` with TOKENFAB_INSECURE_LOCAL_ADMIN=1: the local admin, and the
    warning line in its log."""
    from controlplane.embedded.etcd import free_port

    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "cp.log"
    argv = [sys.executable, "-m", "controlplane.cli.main", "controlplane", "--address", address,
            "--etcd", etcd.endpoint]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TOKENFAB_INSECURE_LOCAL_ADMIN": "1"},
        )

    async def answered() -> tuple[grpc.StatusCode, grpc.StatusCode] | None:
        codes = await plaintext_calls(address)
        return None if grpc.StatusCode.UNAVAILABLE in codes else codes  # not listening yet

    try:
        codes = await wait_for(answered, timeout=60, interval=0.2, what="the CLI's control plane answers")
        assert codes == (grpc.StatusCode.OK, grpc.StatusCode.OK)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warned = [e for e in events if e.get("event") == "security.insecure_local_admin"]
    assert len(warned) == 1 and warned[0]["level"] == "warning", events[-5:]
