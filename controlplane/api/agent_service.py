"""AgentService: Register and the Connect stream (heartbeats in, acks and commands out).

A Connect stream is bound to one node by its first heartbeat; every later heartbeat must name
the same node. Errors end the stream with a status the agent understands: NOT_FOUND (register
first), FAILED_PRECONDITION (declared lost: register again), INVALID_ARGUMENT (a bad field).
Acks and commands share the stream; a per-stream lock keeps their writes from interleaving.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from controlplane.api import convert
from controlplane.api.status import HANDLED, code_for, message_for
from controlplane.errors import InvalidArgument
from controlplane.fleet.registry import NodeCommand, NodeRegistry
from tokenfab.logs import get_logger
from tokenfab.v1 import agent_pb2, agent_pb2_grpc

log = get_logger("api.agent")


class _StreamSink:
    """Pushes commands onto one open Connect stream."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], lock: asyncio.Lock) -> None:
        self._context = context
        self._lock = lock
        self._tasks: set[asyncio.Task[None]] = set()

    def push(self, command: NodeCommand) -> None:
        task = asyncio.get_running_loop().create_task(self._write(convert.command_to_pb(command)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, message: agent_pb2.ControlMessage) -> None:
        try:
            async with self._lock:
                await self._context.write(message)
        except Exception as exc:  # the stream is closing; the agent re-syncs state on reconnect
            log.debug("stream.command_dropped", error=str(exc))


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, registry: NodeRegistry) -> None:
        self._registry = registry
        self._metrics = registry.metrics

    async def Register(  # noqa: N802 - gRPC method name
        self, request: agent_pb2.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.RegisterResponse:
        try:
            registration = convert.registration_from_pb(request)
            view, created = await self._registry.register(registration)
        except HANDLED as exc:
            self._metrics.registrations.labels("rejected").inc()
            log.info(
                "register.rejected",
                node=request.node_id[:80],
                code=code_for(exc).name,
                error=message_for(exc),
            )
            await context.abort(code_for(exc), message_for(exc))
        return agent_pb2.RegisterResponse(
            state=convert.STATE_TO_PB[view.state],
            created=created,
            heartbeat_interval_s=self._registry.timing.heartbeat_interval_s,
        )

    async def Connect(  # noqa: N802 - gRPC method name
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        lock = asyncio.Lock()
        sink = _StreamSink(context, lock)
        node_id: str | None = None
        registry = self._registry
        histogram = self._metrics.heartbeat_seconds
        ok = self._metrics.heartbeats.labels("ok")
        self._metrics.streams.inc()
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                started = time.perf_counter()
                try:
                    if message.WhichOneof("body") != "heartbeat":
                        raise InvalidArgument("body", "expected a heartbeat")
                    beat = message.heartbeat
                    if node_id is None:
                        registry.get(beat.node_id)  # NOT_FOUND before binding
                        node_id = beat.node_id
                        registry.attach(node_id, sink)
                        log.info("stream.opened", node=node_id, peer=context.peer())
                    elif beat.node_id != node_id:
                        raise InvalidArgument(
                            "heartbeat.node_id", f"this stream is bound to node {node_id!r}"
                        )
                    state = await registry.heartbeat(node_id, convert.telemetry_from_pb(beat.devices))
                except HANDLED as exc:
                    self._metrics.heartbeats.labels("rejected").inc()
                    await context.abort(code_for(exc), message_for(exc))
                ack = agent_pb2.ControlMessage(
                    ack=agent_pb2.Ack(seq=beat.seq, state=convert.STATE_TO_PB[state])
                )
                async with lock:
                    await context.write(ack)
                histogram.observe(time.perf_counter() - started)
                ok.inc()
        finally:
            self._metrics.streams.dec()
            if node_id is not None:
                registry.detach(node_id, sink)
                log.info("stream.closed", node=node_id)
