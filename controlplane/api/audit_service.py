"""AuditService: reads the audit log (:mod:`controlplane.security.audit`); admins only (policy)."""

from __future__ import annotations

from typing import Any

import grpc

from controlplane.api.convert import datetime_to_ts
from controlplane.errors import InvalidArgument
from controlplane.security import AuditLog
from tokenfab.v1 import audit_pb2, audit_pb2_grpc

MAX_LIMIT = 1000
SCAN_LIMIT = 20_000  # entries read to filter from; the log's retention keeps it near this size


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def ListAudit(  # noqa: N802
        self, request: audit_pb2.ListAuditRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.ListAuditResponse:
        if request.limit > MAX_LIMIT:
            raise InvalidArgument("limit", f"at most {MAX_LIMIT} (0 means 100)")
        if len(request.principal) > 256 or len(request.result) > 64:
            raise InvalidArgument("principal", "filters are at most 256 characters")
        entries = await self._audit.list(limit=SCAN_LIMIT)
        chosen = [
            e
            for e in entries
            if request.principal in e.principal and (not request.result or e.result == request.result)
        ][-(request.limit or 100) :]
        return audit_pb2.ListAuditResponse(
            entries=[
                audit_pb2.AuditRecord(
                    at=datetime_to_ts(e.at), principal=e.principal, method=e.method, target=e.target,
                    result=e.result, reason=e.reason, peer=e.peer,
                )
                for e in chosen
            ]
        )  # fmt: skip
