"""The audit log: every mutating call and every refused call, append-only in etcd, with retention.

::

    /tokenfab/v1/audit/<20-digit time ns>-<6-digit seq>   AuditEntry (pydantic JSON)

Keys sort by time, so the newest entries are the last of a prefix listing. Entries are only ever
created (``create_all``: never overwritten); the writer trims the oldest beyond ``max_entries``
every ``trim_every`` appends, which is the only delete. An audit write that fails is logged and
counted, and never fails the call it describes (the structured log line is the second copy).
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from controlplane.store.base import Store
from controlplane.store.keys import ROOT
from tokenfab.logs import get_logger

log = get_logger("security.audit")
AUDIT = ROOT + "audit/"
MAX_TEXT = 512


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    principal: str  # kind/name (role), or "anonymous"
    method: str  # Service/Method
    target: str = ""
    result: str  # OK, or the gRPC status code name
    reason: str = ""
    peer: str = ""


class AuditLog:
    def __init__(self, store: Store, *, max_entries: int = 10_000, trim_every: int = 200) -> None:
        self._store = store
        self._max = max_entries
        self._trim_every = trim_every
        self._seq = itertools.count()
        self._since_trim = 0
        self.failures = 0

    async def append(self, entry: AuditEntry) -> None:
        entry = entry.model_copy(
            update={"reason": entry.reason[:MAX_TEXT], "target": entry.target[:MAX_TEXT]}
        )
        log.info(
            "audit", principal=entry.principal, method=entry.method, target=entry.target,
            result=entry.result, reason=entry.reason,
        )  # fmt: skip
        key = f"{AUDIT}{time.time_ns():020d}-{next(self._seq) % 1_000_000:06d}"
        try:
            await self._store.create_all([(key, entry.model_dump_json().encode())])
            self._since_trim += 1
            if self._since_trim >= self._trim_every:
                self._since_trim = 0
                await self.trim()
        except Exception as exc:  # the call it describes has happened; never fail it
            self.failures += 1
            log.warning("audit.write_failed", error=str(exc))

    async def trim(self) -> int:
        kvs, _ = await self._store.list_prefix(AUDIT)
        excess = kvs[: max(0, len(kvs) - self._max)]
        for kv in excess:
            await self._store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)
        return len(excess)

    async def list(self, *, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries, oldest first; unreadable entries are skipped."""
        kvs, _ = await self._store.list_prefix(AUDIT)
        out = []
        for kv in kvs[-limit:] if limit else kvs:
            try:
                out.append(AuditEntry.model_validate_json(kv.value))
            except ValueError:
                log.warning("audit.unreadable", key=kv.key)
        return out


def now() -> datetime:
    return datetime.now(UTC)
