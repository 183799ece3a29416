"""Children of ``tokenfab up`` end when it does, however it ends.

``tokenfab up`` starts agents and executors in their own sessions (so a Ctrl-C in the terminal
reaches ``up`` alone, which then stops them in order) and sets ``TOKENFAB_PARENT_PID`` for them.
If ``up`` is killed outright, nobody stops them; this watchdog notices the parent is gone (the
child is re-parented, so ``getppid()`` changes) and triggers the child's normal shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

ENV = "TOKENFAB_PARENT_PID"


async def exit_with_parent(stop: asyncio.Event, *, interval_s: float = 1.0) -> None:
    """Set ``stop`` when the process named by TOKENFAB_PARENT_PID is no longer our parent."""
    wanted = os.environ.get(ENV, "")
    if not wanted.isdigit():
        return
    while not stop.is_set():
        if os.getppid() != int(wanted):
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
