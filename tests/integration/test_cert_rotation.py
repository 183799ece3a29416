"""Certificate renewal without a restart: real servers on loopback, their files overwritten.

cert-manager (or the chart's certgen) rewrites a Secret's files in place; a server must present the
new certificate to new connections, and a half-written or mismatched set must leave it serving the
last good one (``tls.reload_failed`` logged, counted), never nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.executor.service import RemoteExecutor, executor_server
from controlplane.security import Issued, Kind
from tests.integration.authz_matrix import EmptyCluster
from tests.integration.conftest import ControlPlaneFactory, Deployment, metric_value
from tests.integration.helpers import register_request
from tokenfab.tls import ClientTLS, RenewingChannel, ServerTLS, TLSMetrics, client_channel
from tokenfab.v1 import agent_pb2_grpc


def serial_of(cert_file: Path) -> int:
    return x509.load_pem_x509_certificates(cert_file.read_bytes())[0].serial_number


def peer_serial(port: int, ca: Path, client: Issued | None = None, *, alpn: str = "h2") -> int:
    """Open a NEW TLS connection and return the serial number of the certificate the server sent."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    context.set_alpn_protocols([alpn])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


class Served:
    """The files a server was started with, and what to overwrite them with."""

    def __init__(self, directory: Path, deployment: Deployment, kind: Kind, name: str) -> None:
        self.a = deployment.issue(kind, f"{name}-a")
        self.b = deployment.issue(kind, f"{name}-b")
        self.cert, self.key = directory / f"{name}.crt", directory / f"{name}.key"
        shutil.copyfile(self.a.cert, self.cert)
        shutil.copyfile(self.a.key, self.key)

    def install(self, cert: bytes, key: bytes) -> None:
        self.cert.write_bytes(cert)
        self.key.write_bytes(key)


async def rotate(
    served: Served, serial: Callable[[], Awaitable[int]], metrics: TLSMetrics, component: str
) -> None:
    """The scenario every server must pass: A served; B written, a new connection sees B; broken
    sets written, new connections still see B and each refusal is logged and counted."""
    reloads = metrics.reloads
    assert await serial() == serial_of(served.a.cert)
    b_cert, b_key = served.b.cert.read_bytes(), served.b.key.read_bytes()
    served.install(b_cert, b_key)
    assert await serial() == serial_of(served.b.cert)  # no restart
    assert metric_value(reloads, component=component, result="ok") == 1
    expiry = x509.load_pem_x509_certificate(b_cert).not_valid_after_utc.timestamp()
    assert metric_value(metrics.expiry, component=component) == expiry

    broken = {
        "garbage key": (b_cert, b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"),
        "mismatched key": (b_cert, served.a.key.read_bytes()),
        "half-written certificate": (b_cert[: len(b_cert) // 2], b_key),
    }
    for n, (what, (cert, key)) in enumerate(broken.items(), start=1):
        with capture_logs() as logs:
            served.install(cert, key)
            assert await serial() == serial_of(served.b.cert), what
        failed = [e for e in logs if e["event"] == "tls.reload_failed"]
        assert len(failed) == 1, (what, logs)
        assert failed[0]["component"] == component and failed[0]["log_level"] == "error"
        assert metric_value(reloads, component=component, result="error") == n, what
    assert metric_value(reloads, component=component, result="ok") == 1
    served.install(b_cert, b_key)  # repaired: same contents as served, nothing to reload
    assert await serial() == serial_of(served.b.cert)
    assert metric_value(reloads, component=component, result="ok") == 1


async def health_over(address: str, tls: ClientTLS) -> int:
    async with client_channel(address, tls) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(reply.status)


async def test_the_control_plane_serves_a_renewed_certificate_without_a_restart(
    control_plane: ControlPlaneFactory, deployment: Deployment, tmp_path: Path
) -> None:
    served = Served(tmp_path, deployment, Kind.CONTROLPLANE, "rotating-cp")
    plane = await control_plane(
        tls_cert=served.cert, tls_key=served.key, tls_client_ca=deployment.ca.cert_file,
        operators_file=deployment.operators_file,
    )  # fmt: skip
    port = int(plane.config.address.rpartition(":")[2])
    client = deployment.issue(Kind.CLIENT, "rotation")

    async def serial() -> int:
        return await asyncio.to_thread(peer_serial, port, deployment.ca.cert_file, client)

    await rotate(served, serial, TLSMetrics.of(plane.metrics.registry), "controlplane")
    # gRPC itself, on a new channel, completes calls against the renewed certificate
    tls = ClientTLS(deployment.ca.cert_file, client.cert, client.key)
    assert await health_over(plane.config.address, tls) == health_pb2.HealthCheckResponse.SERVING


async def test_the_executor_serves_a_renewed_certificate_without_a_restart(
    deployment: Deployment, tmp_path: Path
) -> None:
    served = Served(tmp_path, deployment, Kind.EXECUTOR, "rotating-ex")
    registry = CollectorRegistry()
    server, health = executor_server(EmptyCluster())
    port = free_port()
    tls = ServerTLS(served.cert, served.key, deployment.ca.cert_file)
    server.add_secure_port(f"127.0.0.1:{port}", tls.credentials("executor", registry))
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    client = deployment.issue(Kind.CONTROLPLANE, "rotation")
    try:

        async def serial() -> int:
            return await asyncio.to_thread(peer_serial, port, deployment.ca.cert_file, client)

        await rotate(served, serial, TLSMetrics.of(registry), "executor")
        channel_tls = ClientTLS(deployment.ca.cert_file, client.cert, client.key)
        assert await health_over(f"127.0.0.1:{port}", channel_tls) == health_pb2.HealthCheckResponse.SERVING
        remote = RemoteExecutor("matrix", f"127.0.0.1:{port}", tls=channel_tls)  # the control plane's client
        try:
            assert (await remote.inventory()).cluster == "matrix"
        finally:
            await remote.close()
    finally:
        await server.stop(0.1)


async def test_the_gateway_serves_a_renewed_certificate_without_a_restart(
    etcd: EtcdProcess, deployment: Deployment, tmp_path: Path
) -> None:
    """The real gateway (its ``ssl.SSLContext`` from ``server_ssl_context``): new handshakes get
    the renewed chain, and HTTPS requests keep working."""
    from controlplane.gateway.server import Gateway, GatewayConfig

    served = Served(tmp_path, deployment, Kind.CLIENT, "rotating-gw")
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: demo, token: demo-token}\n")
    port = free_port()
    gateway = Gateway(
        GatewayConfig(
            listen=f"127.0.0.1:{port}", tenants_file=tenants, etcd_endpoint=etcd.endpoint,
            tls_cert=served.cert, tls_key=served.key,
        )
    )  # fmt: skip
    await gateway.start()
    try:

        async def serial() -> int:
            return await asyncio.to_thread(peer_serial, port, deployment.ca.cert_file, alpn="http/1.1")

        await rotate(served, serial, TLSMetrics.of(gateway.metrics.registry), "gateway")
        client = ssl.create_default_context(cafile=str(deployment.ca.cert_file))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://localhost:{port}/healthz", ssl=client) as response,
        ):
            assert response.status == 200
    finally:
        await gateway.stop()


async def test_a_client_presents_its_renewed_certificate_on_a_new_channel(
    control_plane: ControlPlaneFactory, deployment: Deployment, tmp_path: Path
) -> None:
    """Agents open a new channel per session: one built after the files changed carries the new
    client certificate. The node rule shows which one the server saw: node/rc-a may register only
    as rc-a, node/rc-b only as rc-b."""
    plane = await control_plane()
    served = Served(tmp_path, deployment, Kind.NODE, "rc")
    tls = ClientTLS(deployment.ca.cert_file, served.cert, served.key)

    async def register(node: str) -> grpc.StatusCode:
        async with client_channel(plane.config.address, tls) as channel:
            try:
                await agent_pb2_grpc.AgentServiceStub(channel).Register(register_request(node), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert await register("rc-b") == grpc.StatusCode.PERMISSION_DENIED
    assert await register("rc-a") == grpc.StatusCode.OK
    served.install(served.b.cert.read_bytes(), served.b.key.read_bytes())
    assert await register("rc-b") == grpc.StatusCode.OK
    assert await register("rc-a") == grpc.StatusCode.PERMISSION_DENIED


async def test_a_long_lived_channel_presents_the_renewed_certificate(
    control_plane: ControlPlaneFactory, deployment: Deployment, tmp_path: Path
) -> None:
    """RenewingChannel (the control plane's channel to each executor): after the files change, the
    next call goes over a new channel with the new certificate; a broken pair keeps the old one."""
    plane = await control_plane()
    served = Served(tmp_path, deployment, Kind.NODE, "lc")
    renewing = RenewingChannel(
        plane.config.address, ClientTLS(deployment.ca.cert_file, served.cert, served.key), check_s=0.0
    )

    async def register(node: str) -> grpc.StatusCode:
        try:
            stub = agent_pb2_grpc.AgentServiceStub(renewing.get())
            await stub.Register(register_request(node), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    try:
        assert await register("lc-a") == grpc.StatusCode.OK
        first = renewing.channel
        with capture_logs() as logs:
            served.install(
                served.b.cert.read_bytes(), served.a.key.read_bytes()
            )  # half-way: B's cert, A's key
            assert await register("lc-a") == grpc.StatusCode.OK  # still A, same channel
        assert renewing.channel is first
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["tls.client_reload_failed"]
        served.install(served.b.cert.read_bytes(), served.b.key.read_bytes())
        assert await register("lc-b") == grpc.StatusCode.OK  # the server saw node/lc-b
        assert await register("lc-a") == grpc.StatusCode.PERMISSION_DENIED
        assert renewing.channel is not first
    finally:
        await renewing.close()
