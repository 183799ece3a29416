"""Capacity requests: create (idempotent), read, list, watch, update, cancel; tenant isolation and
quotas. State lives in the store; every write is a compare-and-swap or an atomic create.

Keys (see controlplane/store/keys.py)::

    /tokenfab/v1/capacity/requests/<id>                     CapacityRecord (pydantic JSON)
    /tokenfab/v1/capacity/idempotency/<tenant>/<sha256(key)> the request id, created atomically
                                                            with the request: one key, one request

Quotas charge each active request its *estimate*: the replicas of the catalog's cheapest option
that meet its targets (accelerators and spend per hour). Over a quota: RESOURCE_EXHAUSTED.

Admission is atomic with creation. A tenant with a quota has an admission counter,
``/tokenfab/v1/capacity/admission/<tenant>/<20-digit n>``: a create reads the newest ticket ``n``
*first*, then the tenant's usage, and creates the request together with ticket ``n + 1`` in one
etcd transaction (``create_all``: all keys or none). Every request admitted before ``n`` was
committed before the usage was read, so it is counted; a concurrent create wins ``n + 1`` and the
loser re-reads and decides again. So concurrent creates never exceed a quota.

Status at creation comes from a dry run of the scheduler on the current fleet: the planned
replicas (state Planned) or the constraint that makes the request unsatisfiable (no allowed
accelerator can serve the model, price cap below the cheapest option, fleet full). Starting the
replicas is the executor's job (reconciler), which updates the status as they come up.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from controlplane.capacity.tenants import Tenant
from controlplane.capacity.validation import check_spec
from controlplane.catalog.types import Catalog
from controlplane.domain.capacity import (
    CapacityRecord,
    CapacitySpec,
    CapacityStatus,
    Condition,
    Estimate,
    Phase,
    ReplicaStatus,
)
from controlplane.domain.nodes import validation_message
from controlplane.domain.replicas import TERMINAL, ReplicaRecord
from controlplane.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermanentError,
    PermissionDenied,
    QuotaExceeded,
)
from controlplane.scheduler import NodeSlot, SchedulerConfig, options_for, schedule
from controlplane.scheduler.demand import demand_of as demand_of  # re-exported: moved to the pure core
from controlplane.scheduler.reasons import plan_reason
from controlplane.store import keys
from controlplane.store.base import RevisionCompacted, Store, StoreUnavailable
from controlplane.store.follow import RETRY_S
from tokenfab.logs import get_logger

log = get_logger("capacity")
MAX_KEY = 256
ADMISSION = keys.ROOT + "capacity/admission/"
ADMISSION_RETRIES = 200
MAX_LIST = 10_000  # requests (or replicas) one List answers with: a response is bounded


class InvalidStoredRecord(PermanentError):
    """A stored request that no longer loads (written by an older version, or by hand): it is
    quarantined (shown as Invalid, skipped by List and Watch) and may only be cancelled."""

    def __init__(self, request_id: str, tenant: str, reason: str) -> None:
        super().__init__(f"capacity request {request_id!r} is Invalid: {reason}")
        self.request_id = request_id
        self.tenant = tenant
        self.reason = reason


def _raw_tenant(value: bytes) -> str:
    try:
        data = json.loads(value)
    except ValueError:
        return ""
    return str(data.get("tenant", "")) if isinstance(data, dict) else ""


def _visible(tenant: Tenant | None, owner: str) -> bool:
    """A tenant sees its own requests; an operator (``None``) sees every tenant's."""
    return tenant is None or owner == tenant.name


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CapacityManager:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        fleet: Callable[[], list[NodeSlot]] = list,
        wall: Callable[[], datetime] = _utcnow,
        new_id: Callable[[], str] = lambda: "cr-" + uuid.uuid4().hex[:12],
        config: SchedulerConfig | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._fleet = fleet
        self._wall = wall
        self._new_id = new_id
        self._config = config or SchedulerConfig()
        self.quarantined: dict[str, str] = {}  # request id -> why it does not load
        self.on_quarantine: Callable[[str, str], None] = lambda request_id, reason: None

    @property
    def store(self) -> Store:
        return self._store

    def using(self, store: Store) -> CapacityManager:
        """The same manager (catalog, fleet, clocks, quarantine) writing through ``store``: the
        leader-only callers (the Kubernetes operator) pass a FencedStore on the election's term."""
        twin = copy.copy(self)  # shallow: the quarantine map and its callback stay shared
        twin._store = store
        return twin

    # -- helpers ---------------------------------------------------------------------------

    def estimate(self, record_id: str, spec: CapacitySpec) -> Estimate | None:
        limits = {name: 8 for name in self._catalog.accelerators}
        demand = demand_of(record_id, spec)
        usable = [o for o in options_for(demand, self._catalog, limits, self._config) if o.feasible]
        if not usable:
            return None
        best = usable[0]
        replicas = math.ceil(spec.output_tokens_per_second / best.output_tokens_per_s)
        if spec.input_tokens_per_second:
            replicas = max(replicas, math.ceil(spec.input_tokens_per_second / best.input_tokens_per_s))
        return Estimate(
            accelerators=replicas * best.tp,
            spend_per_hour=round(replicas * best.cost_per_hour, 4),
            replicas=replicas,
            accelerator=best.accelerator,
            tensor_parallel=best.tp,
        )

    def _dry_run(self, record_id: str, spec: CapacitySpec) -> CapacityStatus:
        now = self._wall()
        plan = schedule(
            self._fleet(), [demand_of(record_id, spec)], [], self._catalog, now=now, config=self._config
        )
        result = plan.for_request(record_id)
        replicas = tuple(
            ReplicaStatus(
                replica_id=f"{record_id}-planned-{i}",
                accelerator=p.accelerator,
                node_id=p.node_id,
                devices=p.devices,
                tensor_parallel=p.tp,
                state="Planned",
                predicted_output_tokens_per_second=round(p.output_tokens_per_s, 1),
                reason=p.reason,
            )
            for i, p in enumerate(result.placements)
        )
        code = plan_reason(result).value
        # status -> (phase, condition type, condition status, reason, message); a table, not branches
        outcomes = {
            "unsatisfiable": (Phase.UNSATISFIABLE, Phase.UNSATISFIABLE, True, code, result.reason),
            "partial": (Phase.PENDING, Phase.PLACING, False, code, result.reason),
            "satisfied": (
                Phase.PENDING,
                Phase.PENDING,
                True,
                "AwaitingExecutor",
                f"{len(replicas)} replicas planned; they start when the executor places them",
            ),
        }
        phase, kind, holds, reason, message = outcomes[result.status]
        condition = Condition(
            type=kind, status=holds, reason=reason, message=message, last_transition_time=now
        )
        return CapacityStatus(
            phase=phase,
            conditions=(condition,),
            replicas=replicas,
            predicted_output_tokens_per_second=round(result.planned_output_tokens_per_s, 1),
            observed_generation=1,
        )

    def _parse(self, key: str, value: bytes) -> CapacityRecord:
        """The stored record, or InvalidStoredRecord (and the request quarantined, once)."""
        request_id = key.rpartition("/")[2]
        try:
            record = CapacityRecord.model_validate_json(value)
        except ValidationError as exc:
            field, message = validation_message(exc)
            reason = f"stored record does not load: {field}: {message}"
            if self.quarantined.get(request_id) != reason:
                self.quarantined[request_id] = reason
                log.error("capacity.quarantined", request=request_id, reason=reason)
                self.on_quarantine(request_id, reason)
            raise InvalidStoredRecord(request_id, _raw_tenant(value), reason) from None
        self.quarantined.pop(request_id, None)
        return record

    async def _records(self) -> list[tuple[CapacityRecord, int]]:
        """Every loadable request; quarantined ones are skipped, never an error for the others."""
        kvs, _ = await self._store.list_prefix(keys.CAPACITY_REQUESTS)
        out = []
        for kv in kvs:
            try:
                out.append((self._parse(kv.key, kv.value), kv.mod_revision))
            except InvalidStoredRecord:
                continue
        return out

    async def invalid(self, tenant: Tenant | None) -> builtins.list[InvalidStoredRecord]:
        """Quarantined requests this caller may see (shown as Invalid by List)."""
        kvs, _ = await self._store.list_prefix(keys.CAPACITY_REQUESTS)
        out = []
        for kv in kvs:
            try:
                self._parse(kv.key, kv.value)
            except InvalidStoredRecord as bad:
                if _visible(tenant, bad.tenant):
                    out.append(bad)
        return out

    def _check_priority(self, tenant: Tenant, spec: CapacitySpec) -> None:
        if tenant.max_priority is not None and spec.priority > tenant.max_priority:
            raise PermissionDenied(
                f"spec.priority: {spec.priority} is above tenant {tenant.name}'s ceiling "
                f"of {tenant.max_priority}"
            )

    @staticmethod
    def _has_quota(tenant: Tenant) -> bool:
        return tenant.max_accelerators is not None or tenant.max_spend_per_hour is not None

    async def _ticket(self, tenant: Tenant) -> tuple[str, list[tuple[str, int]]]:
        """The next admission ticket's key, and the older tickets (to delete once it is taken)."""
        kvs, _ = await self._store.list_prefix(f"{ADMISSION}{tenant.name}/")
        newest = int(kvs[-1].key.rpartition("/")[2]) if kvs else 0
        return f"{ADMISSION}{tenant.name}/{newest + 1:020d}", [(kv.key, kv.mod_revision) for kv in kvs]

    async def _check_quota(self, tenant: Tenant, estimate: Estimate | None, *, excluding: str = "") -> None:
        if estimate is None or not self._has_quota(tenant):
            return
        used_acc, used_spend = 0, 0.0
        for record, _ in await self._records():
            if record.tenant == tenant.name and record.active and record.id != excluding and record.estimate:
                used_acc += record.estimate.accelerators
                used_spend += record.estimate.spend_per_hour
        if tenant.max_accelerators is not None and used_acc + estimate.accelerators > tenant.max_accelerators:
            raise QuotaExceeded(
                f"tenant {tenant.name}: max_accelerators {tenant.max_accelerators} exceeded "
                f"({used_acc} in use + {estimate.accelerators} for this request)"
            )
        if (
            tenant.max_spend_per_hour is not None
            and used_spend + estimate.spend_per_hour > tenant.max_spend_per_hour
        ):
            raise QuotaExceeded(
                f"tenant {tenant.name}: max_spend_per_hour {tenant.max_spend_per_hour:g} exceeded "
                f"({used_spend:.2f} in use + {estimate.spend_per_hour:.2f} for this request)"
            )

    # -- API ---------------------------------------------------------------------------------

    async def create(
        self, tenant: Tenant, spec: CapacitySpec, idempotency_key: str = ""
    ) -> tuple[CapacityRecord, bool]:
        if len(idempotency_key) > MAX_KEY:
            raise InvalidArgument("idempotency_key", f"at most {MAX_KEY} characters")
        check_spec(spec, self._catalog)
        self._check_priority(tenant, spec)
        idem_key = ""
        if idempotency_key:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            idem_key = keys.capacity_idempotency(tenant.name, digest)
            existing = await self._store.get(idem_key)
            if existing is not None:
                record = await self.get(tenant, existing.value.decode())
                if record.spec != spec:
                    raise FailedPrecondition(
                        "idempotency_key: already used for a request with a different spec"
                    )
                return record, False
        for _ in range(ADMISSION_RETRIES):
            created = await self._admit(tenant, spec, idempotency_key, idem_key)
            if created is not None:
                return created
        raise Conflict(f"tenant {tenant.name}: too many concurrent creates; retry")

    async def _admit(
        self, tenant: Tenant, spec: CapacitySpec, idempotency_key: str, idem_key: str
    ) -> tuple[CapacityRecord, bool] | None:
        """One admission attempt; None when a concurrent create of the tenant took the ticket."""
        ticket, old = await self._ticket(tenant) if self._has_quota(tenant) else ("", [])
        record_id = self._new_id()
        estimate = self.estimate(record_id, spec)
        await self._check_quota(tenant, estimate)
        record = CapacityRecord(
            id=record_id,
            tenant=tenant.name,
            spec=spec,
            status=self._dry_run(record_id, spec),
            created_at=self._wall(),
            idempotency_key=idempotency_key,
            estimate=estimate,
        )
        items = [(keys.capacity_request(record_id), record.model_dump_json().encode())]
        if idem_key:
            items.append((idem_key, record_id.encode()))
        if ticket:
            items.append((ticket, record_id.encode()))
        if await self._store.create_all(items) is None:
            if idem_key and (winner := await self._store.get(idem_key)) is not None:
                return await self.get(tenant, winner.value.decode()), False  # a concurrent twin won
            if ticket:  # another create of this tenant took the ticket first: decide again
                return None
            raise Conflict("capacity request id collision; retry")
        for key, revision in old:  # only the newest ticket matters
            await self._store.compare_and_delete(key, expected_mod_revision=revision)
        log.info(
            "capacity.created", request=record_id, tenant=tenant.name, model=spec.model,
            output_tps=spec.output_tokens_per_second, phase=record.status.phase.value,
        )  # fmt: skip
        return record, True

    async def _load(self, tenant: Tenant | None, request_id: str) -> tuple[CapacityRecord, int]:
        if not request_id or len(request_id) > 64 or "/" in request_id:
            raise InvalidArgument("id", "not a capacity request id")
        kv = await self._store.get(keys.capacity_request(request_id))
        if kv is None:
            raise NotFound(f"capacity request {request_id!r} not found")
        try:
            record = self._parse(kv.key, kv.value)
        except InvalidStoredRecord as bad:
            if not _visible(tenant, bad.tenant):
                raise NotFound(f"capacity request {request_id!r} not found") from None
            raise
        if not _visible(tenant, record.tenant):  # other tenants' requests do not exist for this caller
            raise NotFound(f"capacity request {request_id!r} not found")
        return record, kv.mod_revision

    async def get(self, tenant: Tenant | None, request_id: str) -> CapacityRecord:
        return (await self._load(tenant, request_id))[0]

    async def list(self, tenant: Tenant | None, *, include_cancelled: bool = False) -> list[CapacityRecord]:
        found = [
            r
            for r, _ in await self._records()
            if _visible(tenant, r.tenant) and (include_cancelled or r.active)
        ]
        return found[:MAX_LIST]

    async def update(
        self,
        tenant: Tenant,
        request_id: str,
        *,
        input_tokens_per_second: float = 0.0,
        output_tokens_per_second: float = 0.0,
        expected_generation: int = 0,
    ) -> CapacityRecord:
        for field, value in (
            ("input_tokens_per_second", input_tokens_per_second),
            ("output_tokens_per_second", output_tokens_per_second),
        ):
            if not math.isfinite(value) or value < 0 or value > 1e9:
                raise InvalidArgument(field, "must be a number between 0 and 1e9 (0: unchanged)")
        if expected_generation < 0:
            raise InvalidArgument("expected_generation", "must not be negative")
        record, revision = await self._load(tenant, request_id)
        if not record.active:
            raise FailedPrecondition(f"capacity request {request_id!r} is cancelled")
        ceiling = record.spec.autoscaling.max_output_tokens_per_second
        if ceiling is not None and output_tokens_per_second > ceiling:
            raise InvalidArgument(
                "output_tokens_per_second",
                f"{output_tokens_per_second:g} is above this request's autoscaling ceiling "
                f"(spec.autoscaling.max_output_tokens_per_second = {ceiling:g})",
            )
        if expected_generation and expected_generation != record.generation:
            raise FailedPrecondition(
                f"expected_generation: request is at generation {record.generation}, "
                f"not {expected_generation}"
            )
        changed = record.spec.model_dump()
        changed["input_tokens_per_second"] = input_tokens_per_second or record.spec.input_tokens_per_second
        changed["output_tokens_per_second"] = output_tokens_per_second or record.spec.output_tokens_per_second
        try:  # the whole resulting object is validated, as on create
            spec = CapacitySpec.model_validate(changed)
        except ValidationError as exc:
            raise InvalidArgument(*validation_message(exc, prefix="spec.")) from None
        if spec == record.spec:
            return record
        check_spec(spec, self._catalog)
        estimate = self.estimate(request_id, spec)
        await self._check_quota(tenant, estimate, excluding=request_id)
        status = self._dry_run(request_id, spec).model_copy(
            update={"observed_generation": record.generation + 1}
        )
        updated = CapacityRecord.model_validate(
            {**record.model_dump(), "spec": spec, "generation": record.generation + 1,
             "estimate": estimate, "status": status}
        )  # fmt: skip
        if (
            await self._store.compare_and_put(
                keys.capacity_request(request_id),
                updated.model_dump_json().encode(),
                expected_mod_revision=revision,
            )
            is None
        ):
            raise Conflict(f"capacity request {request_id!r} changed concurrently; retry")
        return updated

    async def cancel(self, tenant: Tenant, request_id: str) -> CapacityRecord:
        try:
            record, revision = await self._load(tenant, request_id)
        except InvalidStoredRecord:
            await self._drop_invalid(request_id)
            raise
        if not record.active:
            return record
        now = self._wall()
        status = record.status.model_copy(
            update={
                "phase": Phase.CANCELLED,
                "conditions": (
                    Condition(
                        type=Phase.CANCELLED,
                        status=True,
                        reason="CancelledByTenant",
                        last_transition_time=now,
                    ),
                ),
            }
        )
        cancelled = record.model_copy(update={"status": status})
        if (
            await self._store.compare_and_put(
                keys.capacity_request(request_id),
                cancelled.model_dump_json().encode(),
                expected_mod_revision=revision,
            )
            is None
        ):
            raise Conflict(f"capacity request {request_id!r} changed concurrently; retry")
        log.info("capacity.cancelled", request=request_id, tenant=tenant.name)
        return cancelled

    async def _drop_invalid(self, request_id: str) -> None:
        """Cancelling a quarantined request deletes its record: nothing valid can replace it."""
        kv = await self._store.get(keys.capacity_request(request_id))
        if kv is not None and await self._store.compare_and_delete(
            kv.key, expected_mod_revision=kv.mod_revision
        ):
            self.quarantined.pop(request_id, None)
            log.warning("capacity.invalid_deleted", request=request_id)

    async def replicas(
        self, tenant: Tenant | None, request_id: str = "", *, include_stopped: bool = False
    ) -> builtins.list[ReplicaRecord]:
        """The tenant's replicas (of one request when ``request_id`` is given)."""
        if request_id:
            await self._load(tenant, request_id)  # NOT_FOUND for unknown or foreign ids
        kvs, _ = await self._store.list_prefix(keys.REPLICAS)
        records = []
        for kv in kvs:
            try:
                records.append(ReplicaRecord.model_validate_json(kv.value))
            except ValidationError:
                log.error("replica.unreadable", key=kv.key)
        return [
            r
            for r in records
            if _visible(tenant, r.tenant)
            and (not request_id or r.request_id == request_id)
            and (include_stopped or r.state not in TERMINAL)
        ][:MAX_LIST]

    async def watch(self, tenant: Tenant | None) -> AsyncIterator[tuple[bool, CapacityRecord]]:
        """(is_snapshot, record) for the caller's requests: the current ones, then every change;
        a record that does not load is quarantined and skipped, never the end of the watch.

        The stream outlives the store's failures like every follower (controlplane/store/follow.py):
        a broken etcd watch resumes from the last revision seen, and when that revision was
        compacted away the requests are listed again and every one that changed since it was last
        sent goes out as an upsert, so the client never has to re-subscribe."""
        sent: dict[str, int] = {}  # key -> mod revision last sent (or skipped) to this client
        kvs, revision = await self._store.list_prefix(keys.CAPACITY_REQUESTS)
        for kv in kvs:
            sent[kv.key] = kv.mod_revision
            if (record := self._visible_record(tenant, kv.key, kv.value)) is not None:
                yield True, record
        start = revision + 1
        while True:
            try:
                async for event in self._store.watch_prefix(keys.CAPACITY_REQUESTS, start_revision=start):
                    start = event.mod_revision + 1
                    if not event.value:
                        sent.pop(event.key, None)
                        continue
                    sent[event.key] = event.mod_revision
                    if (record := self._visible_record(tenant, event.key, event.value)) is not None:
                        yield False, record
            except RevisionCompacted as exc:
                log.warning("capacity.watch_compacted", revision=start, compacted=exc.compacted_revision)
                kvs, revision = await self._store.list_prefix(keys.CAPACITY_REQUESTS)
                changed = [kv for kv in kvs if sent.get(kv.key) != kv.mod_revision]
                sent = {kv.key: kv.mod_revision for kv in kvs}
                for kv in changed:
                    if (record := self._visible_record(tenant, kv.key, kv.value)) is not None:
                        yield False, record
                start = revision + 1
                log.info("capacity.watch_resynced", revision=start, changed=len(changed))
            except StoreUnavailable as exc:
                log.warning("capacity.watch_broken", revision=start, error=str(exc))
                await asyncio.sleep(RETRY_S)

    def _visible_record(self, tenant: Tenant | None, key: str, value: bytes) -> CapacityRecord | None:
        try:
            record = self._parse(key, value)
        except InvalidStoredRecord:
            return None
        return record if _visible(tenant, record.tenant) else None
