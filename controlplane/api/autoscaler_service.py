"""AutoscalerService: the autoscaler's status, decision history and mode, read from etcd.

Answers from the store on every instance (only the leader decides; any instance can tell what it
decided). SetMode writes the mode record; the leader reads it on its next autoscaler tick.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc

from controlplane.api.convert import datetime_to_ts
from controlplane.domain.autoscaling import AppliedTarget, DecisionRecord, Mode, ModeRecord
from controlplane.domain.capacity import CapacityRecord
from controlplane.domain.replicas import LIVE, ReplicaRecord
from controlplane.errors import InvalidArgument, NotFound
from controlplane.security import Kind, current_principal
from controlplane.store import keys
from controlplane.store.base import Store
from tokenfab.logs import get_logger
from tokenfab.v1 import autoscaler_pb2, autoscaler_pb2_grpc

log = get_logger("api.autoscaler")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
ACTIONS = ("scale_up", "scale_down", "hold")
MAX_ID = 128


def decision_to_pb(record: DecisionRecord) -> autoscaler_pb2.ScalingDecision:
    return autoscaler_pb2.ScalingDecision(
        request_id=record.request_id,
        at=datetime_to_ts(record.at),
        policy=record.policy,
        mode=record.mode.value,
        applied=record.applied,
        action=record.action,
        current_replicas=record.current_replicas,
        desired_replicas=record.desired_replicas,
        reserved_output_tokens_per_second=record.reserved_output_tokens_per_second,
        target_output_tokens_per_second=record.target_output_tokens_per_second,
        reason=record.reason,
        demand_output_tokens_per_second=record.demand_output_tokens_per_second,
        forecast_output_tokens_per_second=record.forecast_output_tokens_per_second,
        per_replica_output_tokens_per_second=record.per_replica_output_tokens_per_second,
        predicted_utilisation=record.predicted_utilisation,
        predicted_slo_ok=record.predicted_slo_ok,
        cost_per_hour=record.cost_per_hour,
        accelerator=record.accelerator,
        inputs=record.inputs,
    )


def _check_id(value: str, field: str) -> str:
    if len(value) > MAX_ID or any(c in value for c in "/\x00"):
        raise InvalidArgument(field, f"not a capacity request id: {value[:40]!r}")
    return value


async def read_mode(store: Store) -> ModeRecord:
    kv = await store.get(keys.AUTOSCALER_MODE)
    return ModeRecord.model_validate_json(kv.value) if kv is not None else ModeRecord()


async def read_decisions(store: Store, request_id: str) -> list[DecisionRecord]:
    """One request's decisions (or every request's), oldest first per request."""
    prefix = keys.autoscaler_history(request_id) if request_id else keys.AUTOSCALER_HISTORY
    kvs, _ = await store.list_prefix(prefix)
    return [DecisionRecord.model_validate_json(kv.value) for kv in kvs]


async def read_status(store: Store, request_id: str = "") -> autoscaler_pb2.AutoscalerStatus:
    mode = await read_mode(store)
    request_kvs, _ = await store.list_prefix(keys.CAPACITY_REQUESTS)
    requests = []
    for kv in request_kvs:
        try:
            requests.append(CapacityRecord.model_validate_json(kv.value))
        except ValueError:
            continue  # quarantined by the capacity API; one bad record never fails the status
    requests = [r for r in requests if r.active and r.spec.autoscaling.enabled]
    if request_id:
        requests = [r for r in requests if r.id == request_id]
        if not requests:
            raise NotFound(f"request_id: no active autoscaled capacity request {request_id!r}")
    target_kvs, _ = await store.list_prefix(keys.AUTOSCALER_TARGETS)
    targets = {t.request_id: t for t in (AppliedTarget.model_validate_json(kv.value) for kv in target_kvs)}
    replica_kvs, _ = await store.list_prefix(keys.REPLICAS)
    live: dict[str, int] = {}
    for kv in replica_kvs:
        replica = ReplicaRecord.model_validate_json(kv.value)
        if replica.state in LIVE:
            live[replica.request_id] = live.get(replica.request_id, 0) + 1
    status = autoscaler_pb2.AutoscalerStatus(mode=mode.mode.value, mode_reason=mode.reason)
    if mode.updated_at is not None:
        status.mode_updated_at.CopyFrom(datetime_to_ts(mode.updated_at))
    for request in sorted(requests, key=lambda r: r.id):
        auto, spec = request.spec.autoscaling, request.spec
        applied = targets.get(request.id)
        entry = autoscaler_pb2.RequestAutoscaling(
            request_id=request.id,
            tenant=request.tenant,
            model=spec.model,
            advisory=auto.advisory,
            scale_to_zero=auto.scale_to_zero,
            reserved_output_tokens_per_second=spec.output_tokens_per_second,
            target_output_tokens_per_second=(
                applied.output_tokens_per_second if applied else spec.output_tokens_per_second
            ),
            max_output_tokens_per_second=auto.max_output_tokens_per_second,
            replicas=live.get(request.id, 0),
        )
        history = await read_decisions(store, request.id)
        if history:
            entry.last_decision.CopyFrom(decision_to_pb(max(history, key=lambda d: d.at)))
        status.requests.append(entry)
    return status


def _tenant_scope() -> str | None:
    """The calling tenant's name (it sees only its own requests), or None for an operator."""
    principal = current_principal()
    return principal.name if principal.kind is Kind.TENANT else None


async def _owned(store: Store, tenant: str) -> set[str]:
    kvs, _ = await store.list_prefix(keys.CAPACITY_REQUESTS)
    owned = set()
    for kv in kvs:
        try:
            record = CapacityRecord.model_validate_json(kv.value)
        except ValueError:
            continue  # quarantined by the capacity API; never this call's failure
        if record.tenant == tenant:
            owned.add(record.id)
    return owned


class AutoscalerServicer(autoscaler_pb2_grpc.AutoscalerServiceServicer):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def GetStatus(  # noqa: N802
        self, request: autoscaler_pb2.GetAutoscalerStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> autoscaler_pb2.AutoscalerStatus:
        status = await read_status(self._store, _check_id(request.request_id, "request_id"))
        tenant = _tenant_scope()
        if tenant is not None:
            mine = [r for r in status.requests if r.tenant == tenant]
            if request.request_id and not mine:
                raise NotFound(f"request_id: no active autoscaled capacity request {request.request_id!r}")
            del status.requests[:]
            status.requests.extend(mine)
        return status

    async def ListDecisions(  # noqa: N802
        self, request: autoscaler_pb2.ListDecisionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> autoscaler_pb2.ListDecisionsResponse:
        request_id = _check_id(request.request_id, "request_id")
        if request.limit > MAX_LIMIT:
            raise InvalidArgument("limit", f"at most {MAX_LIMIT} (0 means {DEFAULT_LIMIT})")
        if request.action and request.action not in ACTIONS:
            raise InvalidArgument("action", f"one of {', '.join(ACTIONS)} (or empty for any)")
        tenant = _tenant_scope()
        owned = await _owned(self._store, tenant) if tenant is not None else None
        if owned is not None and request_id and request_id not in owned:
            raise NotFound(f"request_id: no capacity request {request_id!r}")
        decisions = await read_decisions(self._store, request_id)
        if owned is not None:
            decisions = [d for d in decisions if d.request_id in owned]
        if request.action:
            decisions = [d for d in decisions if d.action == request.action]
        decisions.sort(key=lambda d: (d.at, d.request_id), reverse=True)
        limit = request.limit or DEFAULT_LIMIT
        return autoscaler_pb2.ListDecisionsResponse(decisions=[decision_to_pb(d) for d in decisions[:limit]])

    async def SetMode(  # noqa: N802
        self, request: autoscaler_pb2.SetAutoscalerModeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> autoscaler_pb2.AutoscalerStatus:
        try:
            mode = Mode(request.mode)
        except ValueError:
            raise InvalidArgument(
                "mode", f"one of {', '.join(m.value for m in Mode)}, got {request.mode[:40]!r}"
            ) from None
        if len(request.reason) > 512:
            raise InvalidArgument("reason", "at most 512 characters")
        record = ModeRecord(mode=mode, reason=request.reason, updated_at=datetime.now(UTC))
        await self._store.put(keys.AUTOSCALER_MODE, record.model_dump_json().encode())
        log.info("autoscaler.mode", mode=mode.value, reason=request.reason, by=str(current_principal()))
        return await read_status(self._store)
