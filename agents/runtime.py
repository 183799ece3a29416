"""The node agent: discover devices, register, keep one Connect stream, follow commands.

``address`` may list several control-plane instances (comma-separated): a session that ends
without a single ack moves the agent on to the next one.

Lifecycle of one session: Register (idempotent) -> open Connect -> every heartbeat interval send
one Heartbeat carrying every device's telemetry -> read acks and commands concurrently. Any
failure ends the session; the agent waits a jittered exponential backoff (reset after a session
that got at least one ack; a temporary error's own delay when longer:
:func:`tokenfab.errors.retry_delay`) and starts a new session, so it rides out control-plane
restarts and re-registers without operator help. A failure a retry cannot fix by the error tree
(a bug, an RPC refused as INTERNAL) is logged as an error, not a warning, and the agent still
reconnects: it must outlive it. A registration the control plane rejects as invalid is a
configuration error (:class:`AgentConfigError`, a :class:`tokenfab.errors.PermanentError`): the
agent stops with exit code 2 instead of retrying forever.

A silent partition (packets dropped, no RST: a cut cable, a firewall, a frozen instance) would
otherwise go unnoticed until TCP gives up, minutes later, and the node's fencing would wait that
long. Two guards end such a session in seconds: HTTP/2 keepalive pings on the channel
(:data:`KEEPALIVE`, the transport's view), and an **ack deadline**: every heartbeat is acked, so
a session that heard nothing from the control plane for :func:`ack_deadline` (three beats, at
least two seconds) is ended and the agent reconnects, to the next address if one is configured.
The heartbeat interval the control plane sends is clamped to ``[HEARTBEAT_MIN_S,
HEARTBEAT_MAX_S]``: a zero or tiny value must not turn the agent into a busy loop, and a huge
one must not silence it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agents.backoff import Backoff
from agents.discovery.base import Backend, DeviceSample, DiscoveredDevice, NotPresent, ToolFailed
from agents.fence import fence
from agents.lease import Notice, NoticeSource
from tokenfab import __version__
from tokenfab.errors import PermanentError, TemporaryError, retry_delay
from tokenfab.logs import get_logger
from tokenfab.tls import ClientTLS, client_channel
from tokenfab.v1 import agent_pb2, agent_pb2_grpc, types_pb2

log = get_logger("agent")

VENDORS = {
    "nvidia": types_pb2.VENDOR_NVIDIA,
    "ascend": types_pb2.VENDOR_ASCEND,
    "biren": types_pb2.VENDOR_BIREN,
    "metax": types_pb2.VENDOR_METAX,
}
HEALTH = {
    "healthy": types_pb2.DEVICE_HEALTH_HEALTHY,
    "degraded": types_pb2.DEVICE_HEALTH_DEGRADED,
    "unhealthy": types_pb2.DEVICE_HEALTH_UNHEALTHY,
}


HEARTBEAT_MIN_S = 0.1
HEARTBEAT_MAX_S = 30.0
ACK_DEADLINE_BEATS = 3
ACK_DEADLINE_MIN_S = 2.0
KEEPALIVE: list[tuple[str, object]] = [
    # ping after 10 s without traffic (the server refuses pings closer than 5 s apart when it
    # sends nothing: api/server.py) ...
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),  # ... and drop the connection if the ack takes 3 s
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # the stream's own beats are data; pings never stop
]


def clamp_interval(seconds: float) -> float:
    """The heartbeat interval to use for what the control plane asked (pure)."""
    if seconds != seconds:  # NaN
        return 1.0
    return min(HEARTBEAT_MAX_S, max(HEARTBEAT_MIN_S, seconds))


def ack_deadline(interval_s: float) -> float:
    """How long a session may go without hearing from the control plane (pure)."""
    return max(ACK_DEADLINE_MIN_S, ACK_DEADLINE_BEATS * interval_s)


class AckTimeout(TemporaryError, ConnectionError):
    """The control plane acked nothing within the deadline: the session is presumed partitioned."""


class AgentConfigError(PermanentError):
    """The control plane refused this agent's registration as invalid; retrying cannot help."""


@dataclass(frozen=True)
class LeaseSpec:
    provider: str
    lease_id: str
    start: datetime
    end: datetime
    price_per_accelerator_hour: float
    preemptible: bool = False


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    cluster: str
    region: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    lease: LeaseSpec | None = None


@dataclass
class AgentStatus:
    """What the agent knows about itself (read model for the CLI and tests)."""

    sessions: int = 0
    registrations: int = 0
    heartbeats_sent: int = 0
    acks: int = 0
    state: str = "unknown"
    cordoned: bool = False
    draining: bool = False
    last_error: str = ""
    notice: str = ""  # the lease notice the agent holds, if any
    fenced_processes: int = 0  # replica processes stopped on FENCE commands


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class Agent:
    def __init__(
        self,
        backend: Backend,
        identity: NodeIdentity,
        *,
        address: str,
        tls: ClientTLS | None = None,
        backoff: Backoff | None = None,
        rpc_timeout_s: float = 5.0,
        devices: list[DiscoveredDevice] | None = None,
        notices: NoticeSource | None = None,
    ) -> None:
        self.backend = backend
        self.identity = identity
        # one address, or several control-plane instances (comma-separated): a session that got
        # no ack moves on to the next one
        self.addresses = [a.strip() for a in address.split(",") if a.strip()]
        if not self.addresses:
            raise ValueError("address: expected host:port[,host:port...]")
        self._at = 0
        self.tls = tls
        self.backoff = backoff or Backoff()
        self.rpc_timeout_s = rpc_timeout_s
        self.status = AgentStatus()
        self.heartbeat_interval_s = 1.0
        self._devices: list[DiscoveredDevice] = list(devices or [])  # already discovered (auto mode)
        self._seq = 0
        self.notices = notices
        self._notice: Notice | None = None
        self._notice_sent: datetime | None = None  # the end this session's control plane was told
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heard_at = 0.0  # monotonic time of the last message from the control plane

    def _use_interval(self, asked: float) -> None:
        interval = clamp_interval(asked)
        if interval != asked:
            log.warning("agent.interval_clamped", node=self.identity.node_id, asked=asked, using=interval)
        self.heartbeat_interval_s = interval

    @property
    def address(self) -> str:
        return self.addresses[self._at]

    def sample(self) -> list[DeviceSample]:
        """One sample of every device; a vendor tool that fails mid-run makes every device
        unhealthy with the reason instead of ending the session (and reconnecting in a loop)."""
        try:
            return self.backend.sample()
        except (NotPresent, ToolFailed) as exc:
            log.warning("agent.sample_failed", node=self.identity.node_id, error=str(exc))
            reason = f"sampling failed: {exc}"[:256]
            return [DeviceSample(d.index, health="unhealthy", health_reason=reason) for d in self._devices]

    def registration(self) -> agent_pb2.RegisterRequest:
        ident = self.identity
        request = agent_pb2.RegisterRequest(
            node_id=ident.node_id,
            cluster=ident.cluster,
            region=ident.region,
            vendor=VENDORS[self.backend.vendor],
            agent_version=__version__,
            labels=ident.labels,
            devices=[
                types_pb2.Device(
                    uuid=d.uuid,
                    index=d.index,
                    model=d.model,
                    memory_bytes=d.memory_bytes,
                    numa_node=d.numa_node,
                    pci_bus_id=d.pci_bus_id,
                    health=HEALTH.get(d.health, types_pb2.DEVICE_HEALTH_UNHEALTHY),
                    health_reason=d.health_reason[:256],
                )
                for d in self._devices
            ],
        )
        if ident.lease is not None:
            lease = ident.lease
            request.lease.CopyFrom(
                types_pb2.LeaseTerms(
                    provider=lease.provider,
                    lease_id=lease.lease_id,
                    start_time=_ts(lease.start),
                    end_time=_ts(lease.end),
                    price_per_accelerator_hour=lease.price_per_accelerator_hour,
                    preemptible=lease.preemptible,
                )
            )
        return request

    def heartbeat(self, samples: list[DeviceSample]) -> agent_pb2.AgentMessage:
        self._seq += 1
        beat = agent_pb2.Heartbeat(node_id=self.identity.node_id, seq=self._seq)
        beat.sent_at.GetCurrentTime()
        for s in samples:
            beat.devices.append(
                types_pb2.DeviceTelemetry(
                    index=s.index,
                    utilization_percent=s.utilization_percent,
                    memory_used_bytes=s.memory_used_bytes,
                    temperature_celsius=s.temperature_celsius,
                    ecc_uncorrected_errors=s.ecc_uncorrected_errors,
                    xid_errors=s.xid_errors,
                    health=HEALTH.get(s.health, types_pb2.DEVICE_HEALTH_UNSPECIFIED),
                    health_reason=s.health_reason,
                )
            )
        return agent_pb2.AgentMessage(heartbeat=beat)

    async def run(self, stop: asyncio.Event) -> None:
        """Run sessions until ``stop`` is set. Raises AgentConfigError on a permanent rejection."""
        if not self._devices:
            self._devices = await asyncio.to_thread(self.backend.discover)
        log.info(
            "agent.discovered",
            node=self.identity.node_id,
            backend=self.backend.name,
            devices=len(self._devices),
            models=sorted({d.model for d in self._devices}),
        )
        poller = asyncio.create_task(self._poll_notices(stop)) if self.notices is not None else None
        try:
            await self._sessions(stop)
        finally:
            if poller is not None:
                poller.cancel()
            for task in list(self._tasks):
                task.cancel()

    async def _poll_notices(self, stop: asyncio.Event) -> None:
        assert self.notices is not None
        while not stop.is_set():
            notice = await self.notices.poll()
            if notice is not None and self.hold_notice(notice):
                log.warning(
                    "agent.lease_notice", node=self.identity.node_id, end=notice.end.isoformat(),
                    source=notice.source, reason=notice.reason,
                )  # fmt: skip
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.notices.interval_s)

    def hold_notice(self, notice: Notice) -> bool:
        """Hold ``notice`` when none is held or it ends sooner than the one held (a later end
        never postpones a known one); True when held. Sessions tell the control plane about it."""
        if self._notice is not None and notice.end >= self._notice.end:
            return False
        self._notice = notice
        self.status.notice = f"{notice.reason}; ends {notice.end.isoformat(timespec='seconds')}"
        return True

    def new_session(self) -> None:
        """A session begins: it may reach another control-plane instance, so a held notice is
        told again (:meth:`notice_message`)."""
        self._notice_sent = None

    def notice_message(self) -> agent_pb2.AgentMessage | None:
        """The held notice, when this session's control plane has not been told this end yet."""
        notice = self._notice
        if notice is None or (self._notice_sent is not None and self._notice_sent <= notice.end):
            return None
        self._notice_sent = notice.end
        return agent_pb2.AgentMessage(
            lease_notice=agent_pb2.LeaseNotice(
                node_id=self.identity.node_id, end_time=_ts(notice.end),
                source=notice.source[:256], reason=notice.reason[:256],
            )
        )  # fmt: skip

    async def _sessions(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            acked_before, floor = self.status.acks, 0.0
            try:
                await self._session(stop)
            except PermanentError:  # the error tree: retrying cannot help (AgentConfigError)
                raise
            except Exception as exc:
                # Any other failure ends this session only: an RPC error, a reset connection, a
                # write on a stream the control plane already closed (asyncio.InvalidStateError),
                # a sampling error. The agent must outlive all of them and reconnect; the error
                # tree says how loudly (and, for a temporary error with a delay, how late).
                self.status.last_error = _describe(exc)
                self.status.state = "disconnected"
                asked = retry_delay(exc, default=0.0)  # a temporary error's own delay, if any
                ended = log.warning if asked is not None else log.error
                ended("agent.session_ended", node=self.identity.node_id, error=self.status.last_error,
                      retryable=asked is not None)  # fmt: skip
                floor = asked or 0.0
            if self.status.acks > acked_before:
                self.backoff.reset()
            elif len(self.addresses) > 1:
                self._at = (self._at + 1) % len(self.addresses)
                log.info("agent.next_address", node=self.identity.node_id, address=self.address)
            if stop.is_set():
                break
            delay = max(floor, self.backoff.next_delay())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _session(self, stop: asyncio.Event) -> None:
        self.status.sessions += 1
        self.new_session()
        channel = client_channel(self.address, self.tls, options=KEEPALIVE)
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            try:
                response = await stub.Register(self.registration(), timeout=self.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise AgentConfigError(f"registration rejected: {exc.details()}") from exc
                raise
            self.status.registrations += 1
            if response.heartbeat_interval_s > 0:
                self._use_interval(response.heartbeat_interval_s)
            self.status.state = types_pb2.NodeState.Name(response.state).removeprefix("NODE_STATE_").lower()
            log.info(
                "agent.registered",
                node=self.identity.node_id,
                created=response.created,
                state=self.status.state,
                interval_s=self.heartbeat_interval_s,
            )
            call = stub.Connect()
            self._heard_at = time.monotonic()
            reader = asyncio.create_task(self._read(call))
            try:
                await self._beat(call, stop, reader)
            finally:
                call.cancel()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await reader
        finally:
            await channel.close(grace=None)

    async def _beat(self, call: Any, stop: asyncio.Event, reader: asyncio.Task[None]) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            if reader.done():
                reader.result()  # re-raise the stream's error
                return
            deadline = ack_deadline(self.heartbeat_interval_s)
            silent = time.monotonic() - self._heard_at
            if silent > deadline:
                raise AckTimeout(f"no ack from {self.address} for {silent:.1f}s (deadline {deadline:g}s)")
            samples = await asyncio.to_thread(self.sample)
            try:
                async with asyncio.timeout(deadline):  # a blocked write is a silent partition too
                    await call.write(self.heartbeat(samples))
            except asyncio.InvalidStateError:
                # The control plane ended the stream (e.g. FAILED_PRECONDITION after this node
                # was declared lost); surface the status the reader task received.
                if reader.done():
                    reader.result()
                raise ConnectionResetError("control plane closed the stream") from None
            self.status.heartbeats_sent += 1
            notice = self.notice_message()
            if notice is not None:
                async with asyncio.timeout(deadline):
                    await call.write(notice)
            next_at += self.heartbeat_interval_s
            wait = max(0.0, next_at - time.monotonic())
            if wait == 0.0:
                next_at = time.monotonic()
            stop_wait = asyncio.ensure_future(stop.wait())
            _done, _ = await asyncio.wait(
                {stop_wait, reader}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            stop_wait.cancel()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call.done_writing()

    async def _read(self, call: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise ConnectionResetError("control plane closed the stream")
            self._heard_at = time.monotonic()
            body = message.WhichOneof("body")
            if body == "ack":
                self.status.acks += 1
                self.status.state = (
                    types_pb2.NodeState.Name(message.ack.state).removeprefix("NODE_STATE_").lower()
                )
            elif body == "command":
                self._apply(message.command)

    def _apply(self, command: agent_pb2.Command) -> None:
        kind = agent_pb2.CommandKind.Name(command.kind).removeprefix("COMMAND_KIND_").lower()
        if command.kind == agent_pb2.COMMAND_KIND_CORDON:
            self.status.cordoned = True
        elif command.kind == agent_pb2.COMMAND_KIND_UNCORDON:
            self.status.cordoned = False
            self.status.draining = False
        elif command.kind == agent_pb2.COMMAND_KIND_DRAIN:
            self.status.cordoned = True
            self.status.draining = True
        elif command.kind == agent_pb2.COMMAND_KIND_CONFIG and command.heartbeat_interval_s > 0:
            self._use_interval(command.heartbeat_interval_s)
        elif command.kind == agent_pb2.COMMAND_KIND_FENCE:
            fenced = {f.replica_id: f.generation for f in command.fenced}
            task = asyncio.get_running_loop().create_task(self._fence(fenced, max(0.0, command.drain_s)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log.info("agent.command", node=self.identity.node_id, kind=kind, reason=command.reason)

    async def _fence(self, fenced: dict[str, int], drain_s: float) -> None:
        try:
            stopped = await fence(self.identity.node_id, fenced, drain_s=min(drain_s, 60.0))
        except OSError as exc:  # no /proc (not Linux): the executor's stop through Ray remains
            log.warning("agent.fence_failed", node=self.identity.node_id, error=str(exc))
            return
        self.status.fenced_processes += len(stopped)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
