"""Real agent processes against a real control plane and etcd: Ready, Suspect, Lost, back, restart."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from controlplane.embedded.etcd import free_port
from tests.integration.conftest import AgentProcess, ControlPlaneFactory, metric_value, state_of, wait_for

NODES = ["t-nvidia-0", "t-ascend-0", "t-biren-0", "t-metax-0"]


async def test_agents_register_and_become_ready(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    plane = await control_plane()
    for node in NODES:
        agents(node, plane.config.address)
    await wait_for(lambda: all(state_of(plane, n) == "ready" for n in NODES), what="4 ready nodes")
    assert plane.registry is not None
    views = {v.node_id: v for v in plane.registry.nodes()}
    assert {v.record.registration.vendor.value for v in views.values()} == {
        "nvidia",
        "ascend",
        "biren",
        "metax",
    }
    ascend = views["t-ascend-0"].record.registration
    assert ascend.lease is not None
    assert ascend.lease.provider == "cloud-test"
    assert len(views["t-metax-0"].telemetry) == 2


async def test_stopped_agent_goes_suspect_then_lost_and_comes_back(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    plane = await control_plane()
    agent = agents("t-nvidia-0", plane.config.address)
    await wait_for(lambda: state_of(plane, "t-nvidia-0") == "ready", what="ready")
    seen = lambda: f"state={state_of(plane, 't-nvidia-0')}\nagent log:\n{agent.output()}"  # noqa: E731
    agent.stop()
    await wait_for(lambda: state_of(plane, "t-nvidia-0") == "suspect", timeout=5, what="suspect", detail=seen)
    await wait_for(lambda: state_of(plane, "t-nvidia-0") == "lost", timeout=5, what="lost", detail=seen)
    agent.start()
    await wait_for(lambda: state_of(plane, "t-nvidia-0") == "ready", what="ready again", detail=seen)


async def test_frozen_agent_is_fenced_and_recovers(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    """SIGSTOP simulates a partition: the node goes Lost; on SIGCONT its stale stream is refused
    and the agent re-registers before it is Ready again."""
    plane = await control_plane()
    agent = agents("t-metax-0", plane.config.address)
    await wait_for(lambda: state_of(plane, "t-metax-0") == "ready", what="ready")
    seen = lambda: f"state={state_of(plane, 't-metax-0')}\nagent log:\n{agent.output()}"  # noqa: E731
    agent.signal(signal.SIGSTOP)
    await wait_for(lambda: state_of(plane, "t-metax-0") == "lost", timeout=6, what="lost", detail=seen)
    agent.signal(signal.SIGCONT)
    await wait_for(
        lambda: state_of(plane, "t-metax-0") == "ready", timeout=15, what="ready after thaw", detail=seen
    )
    assert plane.registry is not None
    assert "first heartbeat" in plane.registry.get("t-metax-0").record.state_reason


async def test_control_plane_restart_keeps_the_fleet(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    port = free_port()
    plane = await control_plane(port=port)
    for node in NODES[:2]:
        agents(node, plane.config.address)
    await wait_for(lambda: all(state_of(plane, n) == "ready" for n in NODES[:2]), what="ready")
    assert plane.registry is not None
    transitions_before = {v.node_id: v.record.state_since for v in plane.registry.nodes()}
    await plane.stop(grace_s=0.1)

    again = await control_plane(port=port)
    assert again.registry is not None
    assert sorted(v.node_id for v in again.registry.nodes()) == sorted(NODES[:2])  # from etcd
    assert {v.state.value for v in again.registry.nodes()} == {"ready"}
    # agents reconnect and keep beating; nodes never leave Ready, no transition is recorded
    await wait_for(
        lambda: all(again.registry.get(n).last_heartbeat is not None for n in NODES[:2]),  # type: ignore[union-attr]
        what="agents reconnected",
    )
    assert {v.state.value for v in again.registry.nodes()} == {"ready"}
    assert {v.node_id: v.record.state_since for v in again.registry.nodes()} == transitions_before
    assert metric_value(again.metrics.registrations, result="updated") >= 2


async def test_an_agent_moves_to_another_instance_when_its_own_stops(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    first = await control_plane()
    second = await control_plane()
    agent = agents("t-nvidia-0", f"{first.config.address},{second.config.address}")
    seen = lambda: f"agent log:\n{agent.output(12)}"  # noqa: E731
    await wait_for(lambda: state_of(first, "t-nvidia-0") == "ready", what="Ready", detail=seen)
    assert metric_value(first.metrics.streams) == 1 and metric_value(second.metrics.streams) == 0

    await first.stop(grace_s=0.1)
    # the stream breaks, the first address refuses, the agent goes on to the second instance
    await wait_for(
        lambda: metric_value(second.metrics.streams) == 1, what="a stream to the second", detail=seen
    )
    assert "agent.next_address" in agent.output(40)
    assert second.registry is not None
    registry = second.registry
    await wait_for(lambda: registry.get("t-nvidia-0").last_heartbeat is not None, what="beats", detail=seen)
    assert state_of(second, "t-nvidia-0") == "ready"


class _SilentLink:
    """A loopback TCP relay that can go silent: it keeps both connections open but stops passing
    bytes either way (no FIN, no RST), like a cut link or a dropping firewall."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.silent = False
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            return  # a new connection is let in, then hears nothing: nothing is passed on
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if self.silent:
                        await asyncio.sleep(3600)  # swallow: the peer never hears of it
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_silent_partition_ends_the_session_in_seconds(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    """The agent reaches its control plane through a link that goes silent (no error, no close):
    the ack deadline ends the session within seconds (TCP alone would take minutes), and the agent
    carries on through its second address."""
    plane = await control_plane(heartbeat_interval_s=0.5, lost_after_s=30.0)
    link = _SilentLink(plane.config.address)
    via_link = await link.start()
    agent = agents("t-nvidia-0", f"{via_link},{plane.config.address}")
    seen = lambda: f"agent log:\n{agent.output(12)}"  # noqa: E731
    try:
        await wait_for(lambda: state_of(plane, "t-nvidia-0") == "ready", what="Ready", detail=seen)
        assert metric_value(plane.metrics.streams) == 1
        link.silent = True
        await wait_for(
            lambda: "no ack from" in agent.output(60), timeout=60, what="the ack deadline", detail=seen
        )
        # the dead link's session ended (the control plane did not close it: nothing reached it)
        await wait_for(lambda: "agent.next_address" in agent.output(80), timeout=60, what="the next address")
        assert plane.registry is not None
        registry = plane.registry
        before = registry.get("t-nvidia-0").last_heartbeat
        await wait_for(
            lambda: registry.get("t-nvidia-0").last_heartbeat != before, timeout=60,
            what="beats over the direct address", detail=seen,
        )  # fmt: skip
    finally:
        await link.stop()
