"""Stop local processes of replicas the control plane fenced (FENCE command).

Every replica process carries ``TOKENFAB_NODE_ID``, ``TOKENFAB_REPLICA_ID`` and
``TOKENFAB_GENERATION`` in its environment (the executor sets them on the Ray actor, and engine
subprocesses inherit them). The agent reads ``/proc/<pid>/environ`` to find the processes of
its own node, sends SIGTERM to those of a fenced replica (same or older generation), waits the
drain window, then sends SIGKILL to what is left.

It sees what its PID namespace shows: every replica process when the agent started the node's
raylet itself (bare metal, ``tokenfab up``, the Helm chart's agent pods), or with ``hostPID``
when something else starts the raylets. Elsewhere the executor's stop through Ray remains the
only fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tokenfab.logs import get_logger

log = get_logger("agent.fence")

NODE_VAR = "TOKENFAB_NODE_ID"
REPLICA_VAR = "TOKENFAB_REPLICA_ID"
GENERATION_VAR = "TOKENFAB_GENERATION"


@dataclass(frozen=True)
class ReplicaProcess:
    pid: int
    replica_id: str
    generation: int


def _environ(pid_dir: Path) -> dict[str, str] | None:
    try:
        raw = (pid_dir / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name.startswith(b"TOKENFAB_"):
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def replica_processes(node_id: str, proc: Path = Path("/proc")) -> Iterator[ReplicaProcess]:
    """Processes of this node's replicas; the agent's own process is never one."""
    me = os.getpid()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
            continue
        env = _environ(pid_dir)
        if not env or env.get(NODE_VAR) != node_id or not env.get(REPLICA_VAR):
            continue
        try:
            generation = int(env.get(GENERATION_VAR, "0"))
        except ValueError:
            generation = 0
        yield ReplicaProcess(int(pid_dir.name), env[REPLICA_VAR], generation)


def to_fence(processes: list[ReplicaProcess], fenced: Mapping[str, int]) -> list[ReplicaProcess]:
    """The processes a fence stops: their replica is fenced at their generation or a later one."""
    return [p for p in processes if p.replica_id in fenced and p.generation <= fenced[p.replica_id]]


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has exited: it serves nothing
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


async def fence(node_id: str, fenced: Mapping[str, int], *, drain_s: float) -> list[ReplicaProcess]:
    """Stop the fenced replicas' processes on this node; returns those it signalled."""
    found = await asyncio.to_thread(lambda: list(replica_processes(node_id)))
    targets = to_fence(found, fenced)
    if not targets:
        return []
    for p in targets:
        _signal(p.pid, signal.SIGTERM)
    log.warning(
        "fence.stopping", node=node_id, replicas=sorted({p.replica_id for p in targets}),
        pids=[p.pid for p in targets], drain_s=drain_s,
    )  # fmt: skip
    for _ in range(max(1, round(drain_s / 0.1))):  # other processes: nothing to await but time
        if not any(_alive(p.pid) for p in targets):
            break
        await asyncio.sleep(0.1)
    killed = [p.pid for p in targets if _alive(p.pid) and _signal(p.pid, signal.SIGKILL)]
    if killed:
        log.warning("fence.killed", node=node_id, pids=killed)
    return targets


__all__ = [
    "GENERATION_VAR",
    "NODE_VAR",
    "REPLICA_VAR",
    "ReplicaProcess",
    "fence",
    "replica_processes",
    "to_fence",
]
