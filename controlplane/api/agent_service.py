"""AgentService: Register and the Connect stream (heartbeats in, acks and commands out).

A Connect stream is bound to one node by its first heartbeat; every later heartbeat must name
the same node, and an agent may only bind its stream to the node in its certificate (Register's
node is checked by the interceptor chain, the policy's ``node_field``). Errors end the stream
with a status the agent understands: NOT_FOUND (register first), FAILED_PRECONDITION (declared
lost: register again), INVALID_ARGUMENT (a bad field), PERMISSION_DENIED (another node's id).
A device whose reported health keeps changing is held unhealthy (:mod:`controlplane.api.damping`)
instead of costing an etcd write and a replica move per flap.
Acks and commands share the stream; a per-stream lock keeps their writes from interleaving.

After the first heartbeat the agent may send a ``LeaseNotice`` (its lease source announced an
earlier end): it becomes a lease revocation, or a drain for an owned node, and an event. The
instance pushes a FENCE command (replicas the node must no longer run) when the stream binds and
whenever that set grows.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import grpc

from controlplane.api import convert
from controlplane.api.damping import HealthDamper
from controlplane.api.status import HANDLED, code_for, message_for
from controlplane.errors import InvalidArgument
from controlplane.fleet.events import EventLog
from controlplane.fleet.fencing import ReplicaFence
from controlplane.fleet.registry import NodeRegistry
from controlplane.fleet.types import NodeCommand
from controlplane.security import check_node
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


FENCE_DRAIN_S = 5.0  # in-flight requests of a fenced replica get this long before SIGKILL
MAX_NOTICE_REASON = 256


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self, registry: NodeRegistry, *, events: EventLog | None = None, fence: ReplicaFence | None = None
    ) -> None:
        self._registry = registry
        self._metrics = registry.metrics
        self._events = events
        self._fence = fence
        self._damper = HealthDamper()

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
            raise  # the interceptor chain answers with the error's status code
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
        fence_sent = -1
        self._metrics.streams.inc()
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                started = time.perf_counter()
                try:
                    body = message.WhichOneof("body")
                    if body == "lease_notice" and node_id is not None:
                        await self._lease_notice(node_id, message.lease_notice)
                        continue
                    if body != "heartbeat":
                        raise InvalidArgument("body", "expected a heartbeat")
                    beat = message.heartbeat
                    if node_id is None:
                        check_node(beat.node_id, field="heartbeat.node_id")  # its own node only
                        registry.get(beat.node_id)  # NOT_FOUND before binding
                        node_id = beat.node_id
                        registry.attach(node_id, sink)
                        log.info("stream.opened", node=node_id, peer=context.peer())
                    elif beat.node_id != node_id:
                        raise InvalidArgument(
                            "heartbeat.node_id", f"this stream is bound to node {node_id!r}"
                        )
                    telemetry, newly_held = self._damper.damp(
                        node_id, convert.telemetry_from_pb(beat.devices), time.monotonic()
                    )
                    if newly_held:
                        self._metrics.health_flaps_damped.inc(newly_held)
                        log.warning("node.health_flapping", node=node_id, devices=self._damper.held(node_id))
                    state = await registry.heartbeat(node_id, telemetry)
                except HANDLED:
                    self._metrics.heartbeats.labels("rejected").inc()
                    raise  # the interceptor chain ends the stream with the error's status code
                ack = agent_pb2.ControlMessage(
                    ack=agent_pb2.Ack(seq=beat.seq, state=convert.STATE_TO_PB[state])
                )
                async with lock:
                    await context.write(ack)
                histogram.observe(time.perf_counter() - started)
                ok.inc()
                if self._fence is not None and self._fence.version(node_id) != fence_sent:
                    fence_sent = self._fence.version(node_id)
                    await self._push_fence(node_id, lock, context)
        finally:
            self._metrics.streams.dec()
            if node_id is not None:
                registry.detach(node_id, sink)
                log.info("stream.closed", node=node_id)

    async def _push_fence(
        self, node_id: str, lock: asyncio.Lock, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        assert self._fence is not None
        fenced = self._fence.fenced(node_id)
        if not fenced:
            return
        command = agent_pb2.Command(
            kind=agent_pb2.COMMAND_KIND_FENCE,
            reason="replicas failed, replaced or stopped: no process may keep serving them",
            drain_s=FENCE_DRAIN_S,
            fenced=[agent_pb2.FencedReplica(replica_id=r, generation=g) for r, g in sorted(fenced.items())],
        )
        async with lock:
            await context.write(agent_pb2.ControlMessage(command=command))
        self._metrics.fence_commands.inc()
        log.info("stream.fence", node=node_id, replicas=len(fenced))

    async def _lease_notice(self, node_id: str, notice: agent_pb2.LeaseNotice) -> None:
        """A provider's notice that the node goes away: an earlier lease end (never a later one)."""
        if notice.node_id != node_id:
            raise InvalidArgument("lease_notice.node_id", f"this stream is bound to node {node_id!r}")
        if not notice.HasField("end_time"):
            raise InvalidArgument("lease_notice.end_time", "required")
        if len(notice.reason) > MAX_NOTICE_REASON or len(notice.source) > MAX_NOTICE_REASON:
            raise InvalidArgument("lease_notice.reason", f"at most {MAX_NOTICE_REASON} characters")
        try:
            end = max(notice.end_time.ToDatetime(tzinfo=UTC), datetime.now(UTC))
        except (ValueError, OverflowError):
            raise InvalidArgument("lease_notice.end_time", "out of range") from None
        view = self._registry.get(node_id)
        why = f"{notice.reason or 'preemption notice'} (from {notice.source or 'the agent'})"
        if view.record.registration.lease is None:
            if view.record.draining:
                return
            await self._registry.drain(node_id, why)
            await self._record(node_id, f"owned node goes away at {end.isoformat(timespec='seconds')}: {why}")
            return
        current = view.record.lease_end
        if current is not None and current <= end:
            return  # already known (the agent repeats its notice after a reconnect)
        await self._registry.set_lease_end(node_id, end, why)
        await self._record(node_id, f"lease ends {end.isoformat(timespec='seconds')}: {why}")

    async def _record(self, node_id: str, message: str) -> None:
        log.info("node.lease_notice", node=node_id, message=message)
        self._metrics.failover_events.labels(kind="preemption_notice").inc()
        if self._events is not None:
            await self._events.record("preemption_notice", message, node_id=node_id)
