"""Metering: prompt and completion tokens per tenant and capacity request, for billing.

Every finished call adds its usage (as the replica reported it) to Prometheus counters at once
and to an in-memory bucket per (tenant, UTC hour, request). Every ``flush_s`` the buckets are
added to their etcd records under ``/tokenfab/v1/usage/<tenant>/<YYYYMMDDHH>/<request id>``
with compare-and-swap, so several gateway instances add to the same records without losing
counts; a bucket whose write fails stays pending and is retried on the next flush (and on stop).
Counts are whole tokens and never rewritten downwards.

:func:`read_usage` lists the records for ``tokenfab usage`` (one tenant or all, since a time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from controlplane.store import keys
from controlplane.store.base import Store
from tokenfab.logs import get_logger

log = get_logger("gateway.metering")
HOUR_FORMAT = "%Y%m%d%H"


class UsageRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    request_id: str
    model: str
    hour: datetime  # the UTC hour's start
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


Bucket = tuple[str, str, str]  # tenant, hour (YYYYMMDDHH), request id


class Meter:
    def __init__(
        self,
        store: Store,
        *,
        flush_s: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._flush_s = flush_s
        self._clock = clock
        self._pending: dict[Bucket, list[int]] = {}  # [requests, prompt, completion]
        self._models: dict[Bucket, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, tenant: str, request_id: str, model: str, prompt: int, completion: int) -> None:
        bucket = (tenant, self._clock().strftime(HOUR_FORMAT), request_id)
        counts = self._pending.setdefault(bucket, [0, 0, 0])
        counts[0] += 1
        counts[1] += max(0, prompt)
        counts[2] += max(0, completion)
        self._models[bucket] = model

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gateway-metering")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()

    async def flush(self) -> int:
        """Add every pending bucket to its record; the number written."""
        async with self._lock:
            pending, self._pending = self._pending, {}
            written = 0
            for bucket, counts in pending.items():
                try:
                    await self._add(bucket, counts)
                    written += 1
                except Exception as exc:  # keep it for the next flush; one bucket never stops the rest
                    log.warning("metering.flush_failed", tenant=bucket[0], request=bucket[2], error=str(exc))
                    again = self._pending.setdefault(bucket, [0, 0, 0])
                    for i in range(3):
                        again[i] += counts[i]
            return written

    async def _add(self, bucket: Bucket, counts: list[int]) -> None:
        tenant, hour, request_id = bucket
        key = keys.usage(tenant, hour, request_id)
        for _ in range(20):
            current = await self._store.get(key)
            base = None
            if current is not None:
                with contextlib.suppress(ValidationError):
                    base = UsageRecord.model_validate_json(current.value)
            if base is None:
                start = datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC)
                base = UsageRecord(
                    tenant=tenant, request_id=request_id, model=self._models[bucket], hour=start
                )
            updated = base.model_copy(
                update={
                    "requests": base.requests + counts[0],
                    "prompt_tokens": base.prompt_tokens + counts[1],
                    "completion_tokens": base.completion_tokens + counts[2],
                }
            )
            expected = current.mod_revision if current is not None else 0
            if await self._store.compare_and_put(
                key, updated.model_dump_json().encode(), expected_mod_revision=expected
            ):
                return
        raise RuntimeError(f"{key}: lost 20 compare-and-swap races")


async def read_usage(
    store: Store, *, tenant: str | None = None, since: datetime | None = None
) -> list[UsageRecord]:
    """Usage records, oldest hour first; a record that does not parse is skipped (and logged)."""
    prefix = keys.USAGE + (f"{tenant}/" if tenant else "")
    if tenant is not None and ("/" in tenant or not tenant):
        raise ValueError(f"tenant: {tenant!r} is not a tenant name")
    kvs, _ = await store.list_prefix(prefix)
    out = []
    for kv in kvs:
        try:
            record = UsageRecord.model_validate_json(kv.value)
        except ValidationError:
            log.warning("metering.bad_record", key=kv.key)
            continue
        if since is None or record.hour >= since.replace(minute=0, second=0, microsecond=0):
            out.append(record)
    out.sort(key=lambda r: (r.hour, r.tenant, r.request_id))
    return out
