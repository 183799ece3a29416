"""FleetService: list, get, watch, cordon, uncordon and drain nodes; revoke and extend leases; events.

Who may call what is :mod:`controlplane.security.policy`'s (reads: operators; changes: admins);
typed errors raised here become status codes in the interceptor chain. Tenants may list events,
only of their own capacity requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from controlplane.api import convert
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.fleet.events import EventLog
from controlplane.fleet.registry import NodeRegistry
from controlplane.fleet.types import ChangeKind
from controlplane.security import Kind, current_principal
from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

MAX_REASON = 256
MAX_NOTICE_S = 30 * 86400
MAX_EVENTS_LIMIT = 1000
MAX_LEASE_AHEAD = timedelta(days=5 * 366)  # an extension further out than this is a typo or an attack

Owner = Callable[[str], Awaitable[str | None]]  # capacity request id -> its tenant (None: unknown)


async def _no_owner(request_id: str) -> str | None:
    return None


def _reason(text: str) -> str:
    if len(text) > MAX_REASON:
        raise InvalidArgument("reason", f"at most {MAX_REASON} characters")
    return text


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(
        self, registry: NodeRegistry, events: EventLog | None = None, *, owner_of: Owner = _no_owner
    ) -> None:
        self._registry = registry
        self._events = events
        self._owner_of = owner_of

    async def _record(self, kind: str, node_id: str, message: str) -> None:
        if self._events is not None:
            await self._events.record(kind, message, node_id=node_id)

    async def ListNodes(  # noqa: N802
        self, request: fleet_pb2.ListNodesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> fleet_pb2.ListNodesResponse:
        vendor = convert.vendor_from_pb(request.vendor) if request.vendor else None
        state = None
        if request.state:
            state = convert.STATE_FROM_PB.get(request.state)
            if state is None:
                raise InvalidArgument("state", f"unknown node state {request.state}")
        nodes = [
            convert.node_to_pb(view)
            for view in self._registry.nodes()
            if (vendor is None or view.record.registration.vendor is vendor)
            and (not request.cluster or view.record.registration.cluster == request.cluster)
            and (state is None or view.state is state)
        ]
        return fleet_pb2.ListNodesResponse(nodes=nodes)

    async def GetNode(  # noqa: N802
        self, request: fleet_pb2.GetNodeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> types_pb2.Node:
        return convert.node_to_pb(self._registry.get(request.node_id))

    async def WatchNodes(  # noqa: N802
        self, request: fleet_pb2.WatchNodesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[fleet_pb2.NodeEvent]:
        changes = self._registry.subscribe()  # before the snapshot: no change falls in between
        try:
            for view in self._registry.nodes():
                yield fleet_pb2.NodeEvent(
                    kind=fleet_pb2.NODE_EVENT_KIND_SNAPSHOT, node=convert.node_to_pb(view)
                )
            async for kind, view in changes:
                pb_kind = (
                    fleet_pb2.NODE_EVENT_KIND_DELETE
                    if kind is ChangeKind.DELETE
                    else fleet_pb2.NODE_EVENT_KIND_UPSERT
                )
                yield fleet_pb2.NodeEvent(kind=pb_kind, node=convert.node_to_pb(view))
        finally:
            changes.close()

    async def Cordon(  # noqa: N802
        self, request: fleet_pb2.CordonRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> types_pb2.Node:
        reason = _reason(request.reason)
        return convert.node_to_pb(await self._registry.cordon(request.node_id, reason))

    async def Uncordon(  # noqa: N802
        self, request: fleet_pb2.UncordonRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> types_pb2.Node:
        return convert.node_to_pb(await self._registry.uncordon(request.node_id))

    async def Drain(  # noqa: N802
        self, request: fleet_pb2.DrainRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> types_pb2.Node:
        reason = _reason(request.reason)
        view = await self._registry.drain(request.node_id, reason)
        await self._record("drain", request.node_id, f"drain requested: {reason or 'no reason given'}")
        return convert.node_to_pb(view)

    async def RevokeLease(  # noqa: N802
        self, request: fleet_pb2.RevokeLeaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> types_pb2.Node:
        if not 0 <= request.notice_s <= MAX_NOTICE_S:  # also false for NaN
            raise InvalidArgument("notice_s", f"must be between 0 and {MAX_NOTICE_S} seconds")
        reason = _reason(request.reason)
        end = datetime.now(UTC) + timedelta(seconds=request.notice_s)
        current = self._registry.get(request.node_id).record.lease_end
        if current is not None and current <= end:
            raise FailedPrecondition(
                f"notice_s: the lease already ends at {current.isoformat(timespec='seconds')}, "
                "before the notice would"
            )
        note = f"revoked with {request.notice_s:g} s notice" + (f": {reason}" if reason else "")
        view = await self._registry.set_lease_end(request.node_id, end, note)
        await self._record(
            "lease_revoked", request.node_id, f"{note}; ends {end.isoformat(timespec='seconds')}"
        )
        return convert.node_to_pb(view)

    async def ExtendLease(  # noqa: N802
        self, request: fleet_pb2.ExtendLeaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> types_pb2.Node:
        if not request.HasField("until"):
            raise InvalidArgument("until", "is required")
        now = datetime.now(UTC)
        try:
            until = convert.ts_to_datetime(request.until)
        except (ValueError, OverflowError, OSError):
            raise InvalidArgument("until", "is not a representable time") from None
        if until <= now:
            raise InvalidArgument("until", "must be in the future")
        if until > now + MAX_LEASE_AHEAD:
            raise InvalidArgument("until", f"at most {MAX_LEASE_AHEAD.days} days ahead")
        reason = _reason(request.reason)
        note = "extended" + (f": {reason}" if reason else "")
        view = await self._registry.set_lease_end(request.node_id, until, note)
        await self._record(
            "lease_extended", request.node_id, f"{note}; ends {until.isoformat(timespec='seconds')}"
        )
        return convert.node_to_pb(view)

    async def ListEvents(  # noqa: N802
        self, request: fleet_pb2.ListEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> fleet_pb2.ListEventsResponse:
        if request.limit > MAX_EVENTS_LIMIT:
            raise InvalidArgument("limit", f"at most {MAX_EVENTS_LIMIT} (0 means 100)")
        principal = current_principal()
        if principal.kind is Kind.TENANT:  # a tenant sees the events of its own requests only
            if not request.request_id or request.node_id:
                raise InvalidArgument("request_id", "a tenant lists the events of one of its requests")
            if await self._owner_of(request.request_id) != principal.name:
                raise NotFound(f"capacity request {request.request_id[:64]!r} not found")
        events = (
            await self._events.list(
                limit=request.limit or 100, node_id=request.node_id, request_id=request.request_id
            )
            if self._events is not None
            else []
        )
        return fleet_pb2.ListEventsResponse(
            events=[
                fleet_pb2.FleetEvent(
                    at=convert.datetime_to_ts(e.at), kind=e.kind, message=e.message, node_id=e.node_id,
                    request_id=e.request_id, replica_id=e.replica_id,
                )
                for e in events
            ]
        )  # fmt: skip
