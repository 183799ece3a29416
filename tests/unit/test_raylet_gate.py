"""The host-wide start gate for raylets (agents/raylet.py): slots are lock files, a raylet holds
one until its agents have published their ports, and an earlier session's port files do not
count."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from agents.raylet import AGENT_PORT_FILES, StartGate, agents_started


def test_a_gate_hands_out_its_slots_and_takes_them_back(tmp_path: Path) -> None:
    gate = StartGate(tmp_path / "gate", slots=2)
    first, second = gate.try_acquire(), gate.try_acquire()
    assert first is not None and second is not None
    assert gate.try_acquire() is None  # both slots held (by this process's other open files)
    StartGate.release(first)
    third = gate.try_acquire()
    assert third is not None
    StartGate.release(second)
    StartGate.release(third)
    StartGate.release(None)  # nothing held: a no-op


def test_a_waiter_gets_the_slot_when_it_is_released_or_gives_up_on_stop(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool]:
        gate = StartGate(tmp_path / "gate", slots=1)
        held = gate.try_acquire()
        stop = asyncio.Event()
        waiter = asyncio.create_task(gate.acquire(stop))
        await asyncio.sleep(0.5)
        blocked = not waiter.done()
        StartGate.release(held)
        got = await asyncio.wait_for(waiter, 5)
        StartGate.release(got)
        # every slot held: a stop ends the wait with nothing
        held = gate.try_acquire()
        stop.set()
        gave_up = await asyncio.wait_for(gate.acquire(stop), 5) is None
        StartGate.release(held)
        return blocked and got is not None, gave_up

    assert asyncio.run(scenario()) == (True, True)


def test_the_agents_count_as_started_only_with_every_port_file_of_this_session(tmp_path: Path) -> None:
    session = tmp_path / "session_2026"
    session.mkdir()
    (tmp_path / "session_latest").symlink_to(session)
    node = "ab" * 28
    started = time.time()
    assert not agents_started(tmp_path, started)
    for prefix in AGENT_PORT_FILES[:-1]:
        (session / f"{prefix}{node}").write_text("4242")
    assert not agents_started(tmp_path, started)  # one agent still missing
    last = session / f"{AGENT_PORT_FILES[-1]}{node}"
    last.write_text("4243")
    assert agents_started(tmp_path, started)
    old = started - 120
    for f in session.iterdir():
        os.utime(f, (old, old))  # a previous session's files, before this start
    assert not agents_started(tmp_path, started)
    assert not agents_started(tmp_path / "nowhere", started)
