"""The control-plane process: store + registry + gRPC server (+ metrics endpoint).

Every call passes one interceptor chain (:mod:`controlplane.security`): authentication (client
certificates, bearer tokens from the tenants and operators files), the policy table, per-principal
stream limits, the audit log in etcd, and typed errors mapped to status codes.

gRPC health checking (``grpc.health.v1``) and server reflection are on, so ``grpcurl`` and
Kubernetes gRPC probes work without extra files. Messages larger than ``max_message_bytes`` are
refused by gRPC itself with RESOURCE_EXHAUSTED before any handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from controlplane.api.agent_service import AgentServicer
from controlplane.api.audit_service import AuditServicer
from controlplane.api.autoscaler_service import AutoscalerServicer
from controlplane.api.capacity_service import CapacityServicer
from controlplane.api.convert import node_summary, node_to_pb
from controlplane.api.fleet_service import FleetServicer
from controlplane.api.status import map_error
from controlplane.autoscale.policy import TokenfabConfig
from controlplane.capacity.manager import CapacityManager
from controlplane.capacity.snapshot import node_slots
from controlplane.capacity.tenants import Tenant, TenantDirectory
from controlplane.catalog.types import load_catalog
from controlplane.config import ControlPlaneConfig
from controlplane.domain.events import EventRecord
from controlplane.executor.service import RemoteExecutor
from controlplane.fleet.events import EventLog
from controlplane.fleet.fencing import ReplicaFence
from controlplane.fleet.registry import NodeRegistry
from controlplane.fleet.types import FleetTiming
from controlplane.ha.election import Election
from controlplane.metrics import ControlPlaneMetrics
from controlplane.reconcile.autoscaler import AutoscalerSettings, LiveAutoscaler
from controlplane.reconcile.decide import ReconcileConfig
from controlplane.reconcile.launch import EngineSettings
from controlplane.reconcile.loop import Reconciler
from controlplane.security import (
    AuditLog,
    Authenticator,
    OperatorDirectory,
    Reloading,
    SecurityInterceptor,
    warn_insecure_local_admin,
)
from controlplane.store.base import Store
from controlplane.store.etcd import EtcdStore
from controlplane.store.fenced import FencedStore
from tokenfab.logs import get_logger
from tokenfab.tls import ClientTLS, ServerTLS
from tokenfab.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    autoscaler_pb2,
    autoscaler_pb2_grpc,
    capacity_pb2,
    capacity_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
)

log = get_logger("controlplane")

SERVICE_NAMES = (
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    fleet_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
    capacity_pb2.DESCRIPTOR.services_by_name["CapacityService"].full_name,
    autoscaler_pb2.DESCRIPTOR.services_by_name["AutoscalerService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


class ControlPlane:
    """``await start()`` serves; ``await stop()`` drains and closes. Nothing runs in __init__."""

    def __init__(
        self,
        config: ControlPlaneConfig,
        *,
        store: Store | None = None,
        metrics: ControlPlaneMetrics | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._owns_store = store is None
        self.metrics = metrics or ControlPlaneMetrics()
        self.registry: NodeRegistry | None = None
        self.capacity: CapacityManager | None = None
        self.reconciler: Reconciler | None = None
        self.election: Election | None = None
        self.operator: Any = None  # controlplane.k8s.operator.Operator when operator_namespaces are set
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self.port: int | None = None
        self.fence: ReplicaFence | None = None
        self._metrics_server: tuple[Any, Any] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.tenants: Reloading[TenantDirectory] | None = None
        self.operators: Reloading[OperatorDirectory] | None = None
        self.audit: AuditLog | None = None
        self.interceptor: SecurityInterceptor | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the control plane is not started")
        return self._store

    def _replicas_on(self, node_id: str) -> int:
        """Live replicas on a node as the leading reconciler last saw them; a drain ends at zero.
        An instance that does not lead does not know, and never declares a drain finished."""
        if self.reconciler is None or self.election is None or not self.election.is_leader():
            return 1 if self.config.executors else 0
        return self.reconciler.replicas_by_node.get(node_id, 0)

    def _tenant(self, name: str) -> Tenant | None:
        return self.tenants.get().tenant(name) if self.tenants is not None else None

    async def _owner_of(self, request_id: str) -> str | None:
        assert self.capacity is not None
        try:
            return (await self.capacity.get(None, request_id)).tenant
        except Exception:  # unknown, malformed or quarantined: nobody's, as far as a tenant may see
            return None

    def _security(self, store: Store) -> SecurityInterceptor:
        cfg = self.config
        if cfg.tenants_file is not None:
            self.tenants = Reloading(cfg.tenants_file, TenantDirectory.load)
            self.tenants.load()  # a bad file stops the start, naming the file and entry
        if cfg.operators_file is not None:
            self.operators = Reloading(cfg.operators_file, OperatorDirectory.load)
            self.operators.load()
        self.audit = audit = AuditLog(store, max_entries=cfg.audit_max_entries)
        if cfg.insecure_local_admin:
            warn_insecure_local_admin("controlplane", cfg.address, tls=cfg.tls_cert is not None)
        return SecurityInterceptor(
            Authenticator(
                tenants=self.tenants, operators=self.operators, insecure_local_admin=cfg.insecure_local_admin
            ),
            errors=map_error,
            audit=audit.append,
            metrics=self.metrics,
            max_streams_per_principal=cfg.max_streams_per_principal,
        )

    async def start(self) -> None:
        cfg = self.config
        if self._store is None:
            etcd_tls = (
                ClientTLS(cfg.etcd_tls_ca, cfg.etcd_tls_cert, cfg.etcd_tls_key) if cfg.etcd_tls_ca else None
            )
            etcd = EtcdStore(
                endpoints=cfg.etcd_endpoints, tls=etcd_tls, on_failover=self.metrics.etcd_failovers.inc
            )
            await etcd.connect()
            self._store = etcd
        timing = FleetTiming(
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            suspect_after_missed=cfg.suspect_after_missed,
            lost_after_s=cfg.lost_after_s,
        )
        identity = cfg.identity or f"{socket.gethostname()}:{cfg.address.rpartition(':')[2]}:{os.getpid()}"
        self.election = Election(
            self._store,
            identity,
            ttl_s=cfg.leader_ttl_s,
            on_change=lambda leading: self.metrics.leader.set(1 if leading else 0),
        )
        self.registry = NodeRegistry(
            self._store, timing=timing, metrics=self.metrics, workloads=self._replicas_on,
            is_leader=self.election.is_leader, identity=identity,
        )  # fmt: skip
        await self.registry.start()
        await self.election.start()

        self.interceptor = self._security(self._store)
        server = grpc.aio.server(
            interceptors=[self.interceptor],
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        self.fence = ReplicaFence(self._store)
        await self.fence.start()
        events = EventLog(self._store)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(self.registry, events=events, fence=self.fence), server
        )
        fleet_pb2_grpc.add_FleetServiceServicer_to_server(
            FleetServicer(self.registry, events, owner_of=self._owner_of), server
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(AuditLog(self._store)), server)
        catalog = load_catalog(cfg.catalog_file)
        registry = self.registry
        self.capacity = CapacityManager(self._store, catalog, fleet=lambda: node_slots(registry.nodes()))
        quarantined = self.metrics.quarantined_records.labels(kind="capacity_request")

        def on_quarantine(request_id: str, reason: str) -> None:
            quarantined.inc()
            task = asyncio.get_running_loop().create_task(
                events.append(
                    EventRecord(
                        at=datetime.now(UTC),
                        kind="quarantined",
                        request_id=request_id,
                        message=f"stored record does not load: {reason}",
                    )
                )
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        self.capacity.on_quarantine = on_quarantine
        if cfg.executors:
            autoscaler = LiveAutoscaler(
                FencedStore(self._store, self.election.fence),  # leader-only writes: fenced (issue 12)
                catalog,
                settings=AutoscalerSettings(
                    interval_s=cfg.autoscale_interval_s,
                    history_limit=cfg.autoscale_history,
                    policy=TokenfabConfig(
                        down_delay_s=cfg.autoscale_down_delay_s,
                        burst_hold_s=cfg.autoscale_burst_hold_s,
                        zero_after_s=cfg.autoscale_zero_after_s,
                    ),
                ),
                tenants=self._tenant,
                metrics=self.metrics,
            )
            self.reconciler = Reconciler(
                self._store,
                catalog,
                self.registry,
                {
                    cluster: RemoteExecutor(cluster, address, tls=self._executor_tls())
                    for cluster, address in cfg.executors.items()
                },
                interval_s=cfg.reconcile_interval_s,
                config=ReconcileConfig(start_timeout_s=cfg.replica_start_timeout_s),
                engines=EngineSettings(mode=cfg.engine_mode, sim_start_delay_s=cfg.sim_start_delay_s),
                metrics=self.metrics,
                autoscaler=autoscaler,
                is_leader=self.election.is_leader,
                fence=self.election.fence,  # every reconcile write compares the leader key (issue 12)
            )
        reconciler = self.reconciler
        capacity_pb2_grpc.add_CapacityServiceServicer_to_server(
            CapacityServicer(
                self.capacity,
                lambda: self.tenants.get() if self.tenants is not None else None,
                observed=lambda rid: reconciler.observed.get(rid) if reconciler else None,
                gateway_url=self.config.gateway_url,
            ),
            server,
        )
        autoscaler_pb2_grpc.add_AutoscalerServiceServicer_to_server(AutoscalerServicer(self._store), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            # reloaded when the files change (a renewed Secret); expiry in the metrics
            creds = ServerTLS(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca).credentials(
                "controlplane", self.metrics.registry
            )
            self.port = server.add_secure_port(cfg.address, creds)
        else:
            self.port = server.add_insecure_port(cfg.address)
        if self.port == 0:
            raise OSError(f"address: cannot listen on {cfg.address}")
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.reconciler is not None:
            await self.reconciler.start()
        if cfg.operator_namespaces:
            from controlplane.k8s.operator import Operator

            self.operator = Operator(
                self.capacity,
                self._tenant,
                lambda: [node_summary(node_to_pb(v)) for v in registry.nodes()],
                namespaces=cfg.operator_namespaces,
                is_leader=self.election.is_leader,
                fence=self.election.fence,  # its store writes are fenced like the reconciler's
            )
            await self.operator.start()
        if cfg.metrics_address:
            host, _, metrics_port = cfg.metrics_address.rpartition(":")
            self._metrics_server = start_http_server(
                int(metrics_port), addr=host or "127.0.0.1", registry=self.metrics.registry
            )
        log.info(
            "controlplane.started",
            address=cfg.address,
            port=self.port,
            tls="mutual" if cfg.tls_client_ca else ("server" if cfg.tls_cert else "off"),
            etcd=cfg.etcd_endpoint,
            nodes=len(self.registry),
        )

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    def _executor_tls(self) -> ClientTLS | None:
        cfg = self.config
        if cfg.executor_tls_ca is None:
            return None
        return ClientTLS(cfg.executor_tls_ca, cfg.tls_cert, cfg.tls_key)

    async def stop(self, *, grace_s: float = 2.0) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.operator is not None:
            await self.operator.stop()
            self.operator = None
        if self.reconciler is not None:
            await self.reconciler.stop()
            for executor in self.reconciler.executors.values():
                if isinstance(executor, RemoteExecutor):
                    await executor.close()
            self.reconciler = None
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self.election is not None:
            await self.election.stop()  # after the reconciler: a successor takes over at once
            self.election = None
        if self.registry is not None:
            await self.registry.stop()
        if self.fence is not None:
            await self.fence.stop()
            self.fence = None
        if self._metrics_server is not None:
            http_server, _thread = self._metrics_server
            http_server.shutdown()
            self._metrics_server = None
        if self._owns_store and self._store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._store.close(), 2.0)
            self._store = None
        log.info("controlplane.stopped")
