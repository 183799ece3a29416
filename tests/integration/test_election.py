"""Leader election on a real etcd: one leader at a time, a planned handover within one retry
interval, a crashed leader replaced after its lease TTL, and the old leader fenced (it stops
acting) before anyone else can start."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from controlplane.embedded.etcd import EtcdProcess
from controlplane.ha.election import Election
from controlplane.store.etcd import EtcdStore
from tests.integration.conftest import AgentProcess, ControlPlaneFactory, wait_for


async def store_for(etcd: EtcdProcess) -> EtcdStore:
    store = EtcdStore(etcd.host, etcd.client_port)
    await store.connect()
    return store


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """``wait_for`` at a fine grain, returning the moment the predicate held (handover times)."""
    await wait_for(predicate, timeout=timeout, interval=0.02, what=what)
    return time.monotonic()


async def test_one_leader_handover_and_crash(etcd: EtcdProcess) -> None:
    stores = [await store_for(etcd) for _ in range(3)]
    changes: list[tuple[float, str, bool]] = []

    def election(name: str, store: EtcdStore) -> Election:
        return Election(store, name, ttl_s=2, margin_s=0.5,
                        on_change=lambda leading: changes.append((time.monotonic(), name, leading)))  # fmt: skip

    a, b, c = election("a", stores[0]), election("b", stores[1]), election("c", stores[2])
    try:
        await a.start()
        await wait_until(a.is_leader, 5, "a leads")
        await b.start()
        await c.start()
        await asyncio.sleep(1.5)  # several retry intervals: nobody else gets in
        assert [e.is_leader() for e in (a, b, c)] == [True, False, False]
        assert (await a.leader())["identity"] == "a"  # type: ignore[index]

        # planned handover: stopping revokes the leader's lease at once (the key does not wait for
        # its TTL), so a successor gets in on its next retry; what is checked is the release itself,
        # not how long it took (no wall-clock bounds in tests)
        await a.stop()
        holder = await a.leader()
        assert holder is None or holder["identity"] != "a", holder
        await wait_until(lambda: b.is_leader() or c.is_leader(), 5, "a successor")
        new, other = (b, c) if b.is_leader() else (c, b)

        # crash: the leader's process stops refreshing (no revoke); it fences itself before the
        # lease can expire, and the other instance leads only after the lease is gone
        new.abandon()
        crashed = time.monotonic()
        fenced = await wait_until(lambda: not new.is_leader(), 5, "the crashed leader fences itself")
        successor = await wait_until(other.is_leader, 10, "a successor after the TTL")
        assert fenced < successor
        # safety, not speed: no successor before the crashed leader's lease could have expired (a
        # loaded machine only makes this later); the wait above bounds how long it may take
        assert successor - crashed >= 1.0
        assert [e.is_leader() for e in (new, other)] == [False, True]
        assert [name for _, name, leading in changes if leading] == ["a", new.identity, other.identity]
    finally:
        for e in (a, b, c):
            await e.stop()
        for s in stores:
            await s.close()


async def test_a_second_instance_follows_the_fleet_and_the_leader_judges_orphaned_nodes(
    control_plane: ControlPlaneFactory, agents: Callable[..., AgentProcess]
) -> None:
    """Two control planes on one etcd. An agent holds its stream to the one that does not lead:
    the leader sees the node through etcd and leaves its liveness to the instance with the
    stream. When that instance stops (its presence lease goes), the leader marks the node
    Suspect, then Lost, after the usual timeouts."""
    from tests.integration.conftest import state_of

    leader = await control_plane(identity="first", lost_after_s=2.0, leader_ttl_s=2)
    await wait_for(lambda: leader.election is not None and leader.election.is_leader(), what="first leads")
    follower = await control_plane(identity="second", lost_after_s=2.0, leader_ttl_s=2)
    agent = agents("t-nvidia-0", follower.config.address)
    await wait_for(lambda: state_of(follower, "t-nvidia-0") == "ready", what="ready at the second")
    await wait_for(lambda: state_of(leader, "t-nvidia-0") == "ready", what="the leader follows")
    await asyncio.sleep(3.0)  # longer than lost_after: the leader must not judge a node it has no stream of
    assert state_of(leader, "t-nvidia-0") == "ready"
    assert follower.election is not None and not follower.election.is_leader()

    agent.signal(signal.SIGSTOP)  # the agent's instance is alive but hears nothing
    await wait_for(
        lambda: state_of(leader, "t-nvidia-0") == "lost", timeout=15, what="lost, via the follower"
    )
    agent.signal(signal.SIGCONT)
    # Ready again, not just registering: a node orphaned before its first beat goes Registering ->
    # Lost by the state table, with no Suspect in between, and Suspect is what is checked next.
    await wait_for(lambda: state_of(leader, "t-nvidia-0") == "ready", timeout=20, what="back")

    await follower.stop(grace_s=0.1)  # the stream's instance is gone: its presence lease goes with it
    await wait_for(
        lambda: state_of(leader, "t-nvidia-0") == "suspect", timeout=10, what="suspect at the leader"
    )
    await wait_for(lambda: state_of(leader, "t-nvidia-0") == "lost", timeout=10, what="lost at the leader")


PAUSED_LEADER = """
import asyncio, os, signal, sys
from controlplane.ha.election import Election
from controlplane.store.base import Fenced
from controlplane.store.etcd import EtcdStore
from controlplane.store.fenced import FencedStore

async def main() -> None:
    store = EtcdStore("127.0.0.1", int(sys.argv[1]))
    await store.connect()
    election = Election(store, "a", ttl_s=2, margin_s=0.5)
    await election.start()
    while not election.is_leader():
        await asyncio.sleep(0.05)
    writes = FencedStore(store, election.fence)
    await writes.create_all([("/fenced/r1", b"a's replica")])
    fence = election.fence()  # the pass checked leadership here ...
    os.kill(os.getpid(), signal.SIGSTOP)  # ... and froze before its next write
    try:
        await writes.create_all([("/fenced/dup", b"a's duplicate")], fence=fence)
        print("LANDED", flush=True)
    except Fenced as exc:
        print("FENCED", exc, flush=True)
    print("LEADS" if election.is_leader() else "STEPPED-DOWN", flush=True)
    os._exit(0)

asyncio.run(main())
"""


def process_state(pid: int) -> str:
    from pathlib import Path

    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def test_a_paused_leader_cannot_write_after_a_successor_was_elected(etcd: EtcdProcess) -> None:
    """A real leader process checks leadership, is frozen (SIGSTOP) past its lease, a successor is
    elected and writes, then the old one is resumed (SIGCONT) and makes the write it had decided
    on: the write carries its term's fence in the same etcd transaction and changes nothing."""
    import subprocess
    import sys

    leader = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the test then waits async
        [sys.executable, "-c", PAUSED_LEADER, str(etcd.client_port)], stdout=subprocess.PIPE, text=True
    )
    store = await store_for(etcd)
    b = Election(store, "b", ttl_s=2, margin_s=0.5)
    try:

        def paused() -> bool:
            assert leader.poll() is None, "the leader exited before pausing"
            return process_state(leader.pid) == "T"

        await wait_for(paused, timeout=30, what="the leader paused (SIGSTOP)")
        assert (await store.get("/fenced/r1")) is not None  # it did lead
        await b.start()
        await wait_until(b.is_leader, 10, "b leads once a's lease expired")
        assert await b.store.create_all([("/fenced/r2", b"b's replica")]) is not None
        before, _ = await store.list_prefix("/fenced/")
        leader.send_signal(signal.SIGCONT)
        out, _ = await asyncio.to_thread(leader.communicate, timeout=30)
        said = [
            line
            for line in out.splitlines()
            if line.split(" ")[0] in ("FENCED", "LANDED", "LEADS", "STEPPED-DOWN")
        ]
        assert said[0].startswith("FENCED"), out
        assert said[1] == "STEPPED-DOWN", out  # and its own clock says so too
        after, _ = await store.list_prefix("/fenced/")
        assert after == before and await store.get("/fenced/dup") is None
    finally:
        if leader.poll() is None:
            leader.send_signal(signal.SIGCONT)
            leader.kill()
            leader.wait()
        await b.stop()
        await store.close()
