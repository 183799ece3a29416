"""CapacityService: wire <-> domain translation and tenant scoping (authentication, authorization
and status codes are the interceptor chain's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from pydantic import ValidationError

from controlplane.api.convert import datetime_to_ts
from controlplane.capacity.manager import CapacityManager, InvalidStoredRecord
from controlplane.capacity.tenants import Tenant, TenantDirectory
from controlplane.domain.capacity import CapacityRecord, CapacitySpec
from controlplane.domain.nodes import validation_message
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.errors import InvalidArgument, PermissionDenied, Unauthenticated
from controlplane.security import Kind, current_principal
from tokenfab.logs import get_logger
from tokenfab.v1 import capacity_pb2, capacity_pb2_grpc, executor_pb2

log = get_logger("api.capacity")


def spec_from_pb(spec: capacity_pb2.CapacitySpec, has_spec: bool) -> CapacitySpec:
    if not has_spec:
        raise InvalidArgument("spec", "is required")
    if not spec.HasField("latency"):
        raise InvalidArgument("spec.latency", "is required (ttft_p95_ms and tpot_p95_ms)")
    data: dict[str, Any] = {
        "model": spec.model,
        "input_tokens_per_second": spec.input_tokens_per_second,
        "output_tokens_per_second": spec.output_tokens_per_second,
        "latency": {"ttft_p95_ms": spec.latency.ttft_p95_ms, "tpot_p95_ms": spec.latency.tpot_p95_ms},
        "allowed_vendors": tuple(spec.allowed_vendors),
        "denied_vendors": tuple(spec.denied_vendors),
        "allowed_accelerators": tuple(spec.allowed_accelerators),
        "denied_accelerators": tuple(spec.denied_accelerators),
        "clusters": tuple(spec.clusters),
        "regions": tuple(spec.regions),
        "priority": spec.priority,
        "max_unavailable_percent": spec.max_unavailable_percent,
    }
    if spec.HasField("max_price_per_million_output_tokens"):
        data["max_price_per_million_output_tokens"] = spec.max_price_per_million_output_tokens
    if spec.mean_input_tokens:
        data["mean_input_tokens"] = spec.mean_input_tokens
    if spec.mean_output_tokens:
        data["mean_output_tokens"] = spec.mean_output_tokens
    if spec.HasField("autoscaling"):
        auto = spec.autoscaling
        data["autoscaling"] = {
            "enabled": auto.enabled,
            "scale_to_zero": auto.scale_to_zero,
            "advisory": auto.advisory,
        }
        for name in ("max_output_tokens_per_second", "max_spend_per_hour"):
            if auto.HasField(name):
                data["autoscaling"][name] = getattr(auto, name)
    try:
        return CapacitySpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgument(*validation_message(exc, prefix="spec.")) from None


def record_to_pb(record: CapacityRecord) -> capacity_pb2.CapacityRequest:
    spec = record.spec
    pb_spec = capacity_pb2.CapacitySpec(
        model=spec.model,
        input_tokens_per_second=spec.input_tokens_per_second,
        output_tokens_per_second=spec.output_tokens_per_second,
        latency=capacity_pb2.LatencyClass(
            ttft_p95_ms=spec.latency.ttft_p95_ms, tpot_p95_ms=spec.latency.tpot_p95_ms
        ),
        allowed_vendors=[v.value for v in spec.allowed_vendors],
        denied_vendors=[v.value for v in spec.denied_vendors],
        allowed_accelerators=list(spec.allowed_accelerators),
        denied_accelerators=list(spec.denied_accelerators),
        clusters=list(spec.clusters),
        regions=list(spec.regions),
        priority=spec.priority,
        mean_input_tokens=spec.mean_input_tokens,
        mean_output_tokens=spec.mean_output_tokens,
        tenant=record.tenant,
        max_unavailable_percent=spec.max_unavailable_percent,
    )
    if spec.max_price_per_million_output_tokens is not None:
        pb_spec.max_price_per_million_output_tokens = spec.max_price_per_million_output_tokens
    auto = spec.autoscaling
    if auto.enabled or auto != type(auto)():
        pb_spec.autoscaling.CopyFrom(
            capacity_pb2.AutoscalingSpec(
                enabled=auto.enabled, scale_to_zero=auto.scale_to_zero, advisory=auto.advisory,
                max_output_tokens_per_second=auto.max_output_tokens_per_second,
                max_spend_per_hour=auto.max_spend_per_hour,
            )
        )  # fmt: skip
    status = record.status
    return capacity_pb2.CapacityRequest(
        id=record.id,
        tenant=record.tenant,
        spec=pb_spec,
        generation=record.generation,
        created_at=datetime_to_ts(record.created_at),
        idempotency_key=record.idempotency_key,
        status=capacity_pb2.CapacityStatus(
            phase=status.phase.value,
            conditions=[
                capacity_pb2.Condition(
                    type=c.type.value,
                    status=c.status,
                    reason=c.reason,
                    message=c.message,
                    last_transition_time=datetime_to_ts(c.last_transition_time),
                )
                for c in status.conditions
            ],
            replicas=[
                capacity_pb2.ReplicaStatus(
                    replica_id=r.replica_id,
                    accelerator=r.accelerator,
                    node_id=r.node_id,
                    devices=list(r.devices),
                    tensor_parallel=r.tensor_parallel,
                    state=r.state,
                    predicted_output_tokens_per_second=r.predicted_output_tokens_per_second,
                    reason=r.reason,
                )
                for r in status.replicas
            ],
            predicted_output_tokens_per_second=status.predicted_output_tokens_per_second,
            ready_output_tokens_per_second=status.ready_output_tokens_per_second,
            observed_generation=status.observed_generation,
            target_output_tokens_per_second=status.target_output_tokens_per_second,
        ),
    )


def invalid_to_pb(bad: InvalidStoredRecord, *, deleted: bool = False) -> capacity_pb2.CapacityRequest:
    """A quarantined request as the API shows it: phase Invalid and why (its spec is unreadable)."""
    message = bad.reason + ("; the record was deleted" if deleted else "; cancel it to delete it")
    return capacity_pb2.CapacityRequest(
        id=bad.request_id,
        tenant=bad.tenant,
        status=capacity_pb2.CapacityStatus(
            phase="Cancelled" if deleted else "Invalid",
            conditions=[
                capacity_pb2.Condition(type="Invalid", status=True, reason="InvalidRecord", message=message)
            ],
        ),
    )


def replica_to_pb(
    record: ReplicaRecord, seen: executor_pb2.ReplicaObservation | None
) -> capacity_pb2.Replica:
    replica = capacity_pb2.Replica(
        id=record.id,
        request_id=record.request_id,
        model=record.model,
        vendor=record.vendor.value,
        accelerator=record.accelerator,
        cluster=record.cluster,
        node_id=record.node_id,
        devices=list(record.devices),
        tensor_parallel=record.tensor_parallel,
        engine=record.engine,
        state=record.state.value,
        reason=record.reason,
        actor_id=record.actor_id,
        endpoint=record.endpoint,
        generation=record.generation,
        predicted_output_tokens_per_second=record.predicted_output_tokens_per_second,
        created_at=datetime_to_ts(record.created_at),
        updated_at=datetime_to_ts(record.updated_at),
    )
    if seen is not None and record.state is ReplicaState.READY:
        stats = seen.stats
        replica.output_tokens_per_second = stats.output_tokens_per_second
        replica.input_tokens_per_second = stats.input_tokens_per_second
        replica.running, replica.waiting = stats.running, stats.waiting
        replica.kv_cache_usage = stats.kv_cache_usage
        replica.ttft_p95_s, replica.tpot_p95_s = stats.ttft_p95_s, stats.tpot_p95_s
    return replica


Observed = Callable[[str], "executor_pb2.ReplicaObservation | None"]


class CapacityServicer(capacity_pb2_grpc.CapacityServiceServicer):
    """Tenants see and change only their own requests; operators (viewer, admin) read everyone's.
    Who may call what is the interceptor's job (:mod:`controlplane.security.policy`)."""

    def __init__(
        self,
        manager: CapacityManager,
        tenants: Callable[[], TenantDirectory | None],
        observed: Observed = lambda _: None,
        gateway_url: str = "",
    ) -> None:
        self._manager = manager
        self._tenants = tenants
        self._observed = observed
        self._gateway_url = gateway_url

    def to_pb(self, record: CapacityRecord) -> capacity_pb2.CapacityRequest:
        pb = record_to_pb(record)
        pb.endpoint = self._gateway_url
        return pb

    def _scope(self) -> Tenant | None:
        """The calling tenant (with its quotas), or None for an operator reading everything."""
        principal = current_principal()
        if principal.kind is not Kind.TENANT:
            return None
        directory = self._tenants()
        tenant = directory.tenant(principal.name) if directory is not None else None
        if tenant is None:  # the token was revoked between authentication and now
            raise Unauthenticated(f"tenant {principal.name!r} is no longer configured")
        return tenant

    def _tenant(self) -> Tenant:
        tenant = self._scope()
        if tenant is None:
            raise PermissionDenied(f"{current_principal()}: only a tenant owns capacity requests")
        return tenant

    async def Create(  # noqa: N802
        self, request: capacity_pb2.CreateCapacityRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> capacity_pb2.CapacityRequest:
        tenant = self._tenant()
        spec = spec_from_pb(request.spec, request.HasField("spec"))
        if request.spec.tenant and request.spec.tenant != tenant.name:
            raise PermissionDenied(f"spec.tenant: you are authenticated as {tenant.name!r}")
        record, _ = await self._manager.create(tenant, spec, request.idempotency_key)
        return self.to_pb(record)

    async def Get(  # noqa: N802
        self, request: capacity_pb2.GetCapacityRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> capacity_pb2.CapacityRequest:
        try:
            return self.to_pb(await self._manager.get(self._scope(), request.id))
        except InvalidStoredRecord as bad:
            return invalid_to_pb(bad)

    async def List(  # noqa: N802
        self, request: capacity_pb2.ListCapacityRequests, context: grpc.aio.ServicerContext[Any, Any]
    ) -> capacity_pb2.ListCapacityResponse:
        scope = self._scope()
        records = await self._manager.list(scope, include_cancelled=request.include_cancelled)
        invalid = await self._manager.invalid(scope)
        return capacity_pb2.ListCapacityResponse(
            requests=[self.to_pb(r) for r in records] + [invalid_to_pb(b) for b in invalid]
        )

    async def Watch(  # noqa: N802
        self, request: capacity_pb2.WatchCapacityRequests, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[capacity_pb2.CapacityEvent]:
        async for snapshot, record in self._manager.watch(self._scope()):
            kind = (
                capacity_pb2.CapacityEvent.KIND_SNAPSHOT
                if snapshot
                else capacity_pb2.CapacityEvent.KIND_UPSERT
            )
            yield capacity_pb2.CapacityEvent(kind=kind, request=self.to_pb(record))

    async def Update(  # noqa: N802
        self, request: capacity_pb2.UpdateCapacityRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> capacity_pb2.CapacityRequest:
        record = await self._manager.update(
            self._tenant(),
            request.id,
            input_tokens_per_second=request.input_tokens_per_second,
            output_tokens_per_second=request.output_tokens_per_second,
            expected_generation=request.expected_generation,
        )
        return self.to_pb(record)

    async def Cancel(  # noqa: N802
        self, request: capacity_pb2.CancelCapacityRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> capacity_pb2.CapacityRequest:
        try:
            return self.to_pb(await self._manager.cancel(self._tenant(), request.id))
        except InvalidStoredRecord as bad:
            return invalid_to_pb(bad, deleted=True)

    async def ListReplicas(  # noqa: N802
        self, request: capacity_pb2.ListReplicasRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> capacity_pb2.ListReplicasResponse:
        records = await self._manager.replicas(
            self._scope(), request.request_id, include_stopped=request.include_stopped
        )
        return capacity_pb2.ListReplicasResponse(
            replicas=[replica_to_pb(r, self._observed(r.id)) for r in records]
        )
