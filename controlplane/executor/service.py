"""The executor process (``tokenfab executor``): one per Ray cluster, that cluster's Ray driver,
serving :class:`ExecutorService` to the control plane; and the control plane's client for it.

Why a process per cluster: a Python process can be the driver of one Ray cluster only, and a
fleet spans several (an owned NVIDIA cluster, a leased Ascend cluster, ...). The executor keeps
no desired state, so it can be restarted at any time; replica actors are detached and survive it.

Trust: the executor runs the same interceptor chain as the control plane; its policy admits only
control-plane instances (``spiffe://tokenfab/controlplane/...`` certificates under mTLS, or the
local principal on a plaintext loopback listener). It refuses to listen in plaintext beyond
loopback unless told ``insecure``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controlplane.catalog.types import Catalog, load_catalog
from controlplane.config import is_loopback
from controlplane.errors import InvalidArgument
from controlplane.executor.expand import ID, EngineConfig, check_launch
from controlplane.security import Authenticator, SecurityInterceptor, warn_insecure_local_admin
from tokenfab.logs import get_logger
from tokenfab.parent import exit_with_parent
from tokenfab.tls import ClientTLS, RenewingChannel, ServerTLS
from tokenfab.v1 import executor_pb2, executor_pb2_grpc

log = get_logger("executor")
SERVICE = executor_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name


class Executor(Protocol):
    """What the reconciler needs from one cluster's executor (remote or in-process)."""

    cluster: str

    async def inventory(self) -> executor_pb2.InventoryResponse: ...

    async def start(self, launch: executor_pb2.ReplicaLaunch) -> executor_pb2.ReplicaObservation: ...

    async def stop(self, replica_id: str, drain_s: float) -> bool: ...

    async def observe(self) -> list[executor_pb2.ReplicaObservation]: ...


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    """Checks every launch (:func:`controlplane.executor.expand.check_launch`) before the backend
    sees it; who may call is the interceptor chain's (control-plane instances only)."""

    def __init__(self, backend: Executor, catalog: Catalog) -> None:
        self._backend = backend
        self._catalog = catalog

    async def Inventory(  # noqa: N802
        self, request: executor_pb2.InventoryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.InventoryResponse:
        return await self._backend.inventory()

    async def StartReplica(  # noqa: N802
        self, request: executor_pb2.StartReplicaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.ReplicaObservation:
        check_launch(request.launch, self._catalog)
        return await self._backend.start(request.launch)

    async def StopReplica(  # noqa: N802
        self, request: executor_pb2.StopReplicaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.StopReplicaResponse:
        if not ID.match(request.replica_id):
            raise InvalidArgument("replica_id", f"{request.replica_id[:40]!r} is not a replica id")
        if not 0 <= request.drain_s <= 3600:  # also false for NaN
            raise InvalidArgument("drain_s", "between 0 and 3600")
        existed = await self._backend.stop(request.replica_id, request.drain_s)
        return executor_pb2.StopReplicaResponse(existed=existed)

    async def Observe(  # noqa: N802
        self, request: executor_pb2.ObserveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.ObserveResponse:
        return executor_pb2.ObserveResponse(replicas=await self._backend.observe())


class RemoteExecutor:
    """The control plane's client of one executor process."""

    def __init__(self, cluster: str, address: str, *, tls: ClientTLS | None = None, timeout_s: float = 15.0):
        self.cluster = cluster
        self.address = address
        self._channel = RenewingChannel(address, tls)  # a renewed client certificate: a new channel
        self._timeout = timeout_s

    @property
    def _stub(self) -> executor_pb2_grpc.ExecutorServiceStub:
        return executor_pb2_grpc.ExecutorServiceStub(self._channel.get())

    async def inventory(self) -> executor_pb2.InventoryResponse:
        response: executor_pb2.InventoryResponse = await self._stub.Inventory(
            executor_pb2.InventoryRequest(), timeout=self._timeout
        )
        return response

    async def start(self, launch: executor_pb2.ReplicaLaunch) -> executor_pb2.ReplicaObservation:
        response: executor_pb2.ReplicaObservation = await self._stub.StartReplica(
            executor_pb2.StartReplicaRequest(launch=launch), timeout=self._timeout
        )
        return response

    async def stop(self, replica_id: str, drain_s: float) -> bool:
        response: executor_pb2.StopReplicaResponse = await self._stub.StopReplica(
            executor_pb2.StopReplicaRequest(replica_id=replica_id, drain_s=drain_s),
            timeout=self._timeout + drain_s,
        )
        return bool(response.existed)

    async def observe(self) -> list[executor_pb2.ReplicaObservation]:
        response: executor_pb2.ObserveResponse = await self._stub.Observe(
            executor_pb2.ObserveRequest(), timeout=self._timeout
        )
        return list(response.replicas)

    async def close(self) -> None:
        await self._channel.close()


def executor_server(
    backend: Executor, catalog: Catalog | None = None, *, insecure_local_admin: bool = False
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The executor's gRPC server with the interceptor chain (only control-plane instances; with
    ``insecure_local_admin``, also any caller on a plaintext loopback connection)."""
    authenticator = Authenticator(insecure_local_admin=insecure_local_admin)
    server = grpc.aio.server(interceptors=[SecurityInterceptor(authenticator)])
    executor_pb2_grpc.add_ExecutorServiceServicer_to_server(
        ExecutorServicer(backend, catalog or load_catalog()), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


def check_listen(listen: str, tls: ServerTLS | None, *, insecure: bool) -> None:
    if tls is None and not insecure and not is_loopback(listen):
        raise InvalidArgument(
            "listen", f"{listen} is not a loopback address: serve it with TLS (--tls-cert, --tls-key, "
            "--tls-client-ca) or pass --insecure"
        )  # fmt: skip
    if tls is not None and tls.client_ca_file is None:
        raise InvalidArgument("tls_client_ca", "the executor needs mutual TLS: it admits only control planes")


async def serve_executor(
    cluster: str,
    ray_address: str,
    listen: str,
    stop: asyncio.Event,
    *,
    tls: ServerTLS | None = None,
    insecure: bool = False,
    insecure_local_admin: bool = False,
    engines: EngineConfig | None = None,
) -> None:
    from controlplane.executor.ray_driver import RayExecutor  # Ray is imported only here

    check_listen(listen, tls, insecure=insecure)
    engines = engines or EngineConfig.load()
    backend = RayExecutor(cluster, ray_address, engines=engines)
    log.info("executor.connecting", cluster=cluster, ray=ray_address)
    if not await connect_unless_stopped(backend.connect, stop):
        log.info("executor.stopped", cluster=cluster, connected=False)
        return
    server, health_servicer = executor_server(
        backend, engines.catalog, insecure_local_admin=insecure_local_admin
    )
    if insecure_local_admin:
        warn_insecure_local_admin("executor", listen, tls=tls is not None)
    # the certificate is reloaded when its files change (a renewed Secret)
    port = (
        server.add_secure_port(listen, tls.credentials("executor"))
        if tls
        else server.add_insecure_port(listen)
    )
    if port == 0:
        raise OSError(f"listen: cannot listen on {listen}")
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "executor.started", cluster=cluster, ray=ray_address, listen=listen, port=port,
        tls="mutual" if tls else "off",
    )  # fmt: skip
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(2.0)
    await asyncio.to_thread(backend.shutdown)
    log.info("executor.stopped", cluster=cluster)


async def connect_unless_stopped(connect: Callable[[], None], stop: asyncio.Event) -> bool:
    """Run ``connect`` in a daemon thread: True once it returned (its error raised here), False
    when ``stop`` came first. ``ray.init`` retries a GCS it cannot reach for a minute and cannot be
    interrupted; in a worker thread of asyncio's it held up a stopping executor until then (the
    interpreter joins those threads at exit, not daemon ones)."""
    outcome: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        try:
            connect()
        except BaseException as exc:  # raised by the caller
            outcome.set_exception(exc)
        else:
            outcome.set_result(None)

    threading.Thread(target=run, name="executor-connect", daemon=True).start()
    done = asyncio.wrap_future(outcome)  # settled on the loop's thread; skipped once it is closed
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {done, stopped}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not done.done():  # an error the connect raises later is read here, not logged as lost
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        return False
    done.result()
    return True


def run_executor(
    cluster: str,
    ray_address: str,
    listen: str,
    *,
    tls: ServerTLS | None = None,
    insecure: bool = False,
    insecure_local_admin: bool = False,
    engines: EngineConfig | None = None,
) -> None:
    check_listen(listen, tls, insecure=insecure)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watchdog = asyncio.create_task(exit_with_parent(stop))
        await serve_executor(
            cluster, ray_address, listen, stop, tls=tls, insecure=insecure,
            insecure_local_admin=insecure_local_admin, engines=engines,
        )  # fmt: skip
        watchdog.cancel()

    asyncio.run(main())
