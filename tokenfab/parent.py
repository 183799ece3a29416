"""Children of ``tokenfab up`` end when it does, however it ends.

``tokenfab up`` starts agents and executors in their own sessions (so a Ctrl-C in the terminal
reaches ``up`` alone, which then stops them in order) and sets ``TOKENFAB_PARENT_PID`` for them.
If ``up`` is killed outright, nobody stops them; this watchdog notices the parent is gone (the
child is re-parented, so ``getppid()`` changes) and triggers the child's normal shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence

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


# -- the kernel's half: PR_SET_PDEATHSIG -------------------------------------------------------
# The watchdog above needs the child to run Python and poll; etcd and ``ray start`` do not. Linux
# can instead send a signal to a process when its parent dies (prctl(2), PR_SET_PDEATHSIG), set in
# the child between fork and exec. Caveats from prctl(2): the "parent" is the *thread* that forked
# the child (``up`` starts children from its event loop's thread or the default executor's worker
# threads, which live as long as it runs); the setting survives exec of a non-setuid binary; a
# parent that died before the prctl is caught by comparing getppid() with the pid seen before fork.

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()  # looked up before any fork: after fork only the call itself runs


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the forking thread ends, however
    it ends (kill -9 included). None where the kernel has no such feature (not Linux)."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:  # nothing sensible to log after fork
            return
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), sig)

    return preexec


# -- the same, for children of a threaded process: a launcher that sets it, then execs ---------
# ``preexec_fn`` runs Python between fork and exec, which Python's documentation calls unsafe in
# a process with threads (a lock held by another thread at fork time stays held in the child) and
# which gRPC's fork handlers make worse. A Ray actor (where replicas start their engines) is such
# a process. The launcher below is a fresh interpreter instead: it is forked and exec'd like any
# binary, sets PR_SET_PDEATHSIG on itself, checks that its parent is still the one that started
# it, and execs the real command, which keeps the same pid and the setting. ``-I -S`` keep the
# command's environment (PYTHONPATH and the like) from changing what the launcher runs.

_LAUNCHER = """\
import ctypes, os, signal, sys
parent, sig = int(sys.argv[1]), int(sys.argv[2])
ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)
if os.getppid() != parent:
    os.kill(os.getpid(), sig)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def exec_with_parent(argv: Sequence[str], *, sig: int = signal.SIGTERM) -> list[str]:
    """``argv`` wrapped so that the command receives ``sig`` when the calling thread ends, however
    it ends; safe to start from a threaded process (no ``preexec_fn``). Unchanged where the kernel
    has no such feature (not Linux)."""
    if _PRCTL is None:
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), str(int(sig)), *argv]
