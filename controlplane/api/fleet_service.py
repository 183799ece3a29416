"""FleetService: list, get, watch, cordon and uncordon nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from controlplane.api import convert
from controlplane.api.status import HANDLED, code_for, message_for
from controlplane.errors import InvalidArgument
from controlplane.fleet.registry import ChangeKind, NodeRegistry
from tokenfab.v1 import fleet_pb2, fleet_pb2_grpc, types_pb2

MAX_REASON = 256


class FleetServicer(fleet_pb2_grpc.FleetServiceServicer):
    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry

    async def ListNodes(  # noqa: N802
        self, request: fleet_pb2.ListNodesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> fleet_pb2.ListNodesResponse:
        try:
            vendor = convert.vendor_from_pb(request.vendor) if request.vendor else None
            state = None
            if request.state:
                state = convert.STATE_FROM_PB.get(request.state)
                if state is None:
                    raise InvalidArgument("state", f"unknown node state {request.state}")
        except HANDLED as exc:
            await context.abort(code_for(exc), message_for(exc))
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
        try:
            return convert.node_to_pb(self._registry.get(request.node_id))
        except HANDLED as exc:
            await context.abort(code_for(exc), message_for(exc))
        raise AssertionError("unreachable")

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
        try:
            if len(request.reason) > MAX_REASON:
                raise InvalidArgument("reason", f"at most {MAX_REASON} characters")
            return convert.node_to_pb(await self._registry.cordon(request.node_id, request.reason))
        except HANDLED as exc:
            await context.abort(code_for(exc), message_for(exc))
        raise AssertionError("unreachable")

    async def Uncordon(  # noqa: N802
        self, request: fleet_pb2.UncordonRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> types_pb2.Node:
        try:
            return convert.node_to_pb(await self._registry.uncordon(request.node_id))
        except HANDLED as exc:
            await context.abort(code_for(exc), message_for(exc))
        raise AssertionError("unreachable")
