"""A real engine process ends when the process that started it dies, even on kill -9.

The parent is a real Python process running the executor's :class:`ProcessEngine` (as a replica
actor does) on a harmless command from an operator template: ``python -m http.server`` on the
replica's port, serving a directory with a ``health`` file, so ``GET /health`` answers 200. The
parent is killed with SIGKILL; the kernel must send the engine SIGTERM (PR_SET_PDEATHSIG, set by
the launcher of :func:`tokenfab.parent.exec_with_parent`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from controlplane.embedded.etcd import free_port
from tests.integration.conftest import wait_for

PARENT = """
import asyncio, sys
from controlplane.catalog import Dtype, load_catalog
from controlplane.executor.adapters import ProcessEngine
from controlplane.executor.engines import launch_spec

async def main() -> None:
    served, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    catalog = load_catalog()
    template = sys.executable + " -m http.server {port} --bind {host} --directory {model_path}"
    spec = launch_spec(
        catalog, catalog.model("qwen2.5-7b-instruct"), catalog.accelerator("BR104"), "suinfer-llm",
        tp=1, dtype=Dtype.BF16, devices=[0], port=port, model_path=served,
        templates={"suinfer-llm": template},
    )
    engine = ProcessEngine(spec, log, ready_timeout_s=60)
    await engine.start()  # returns once GET /health answered 200
    print(engine.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def start_parent(served: Path, port: int, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PARENT, str(served), str(port), str(log)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip


def command_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_process_engine_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "health").write_text("ok\n")
    port = free_port()
    parent = start_parent(served, port, tmp_path / "engine.log")
    engine_pid = 0
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # the engine is healthy once the parent prints its pid
        assert line.strip().isdigit(), f"parent printed {line!r}; engine log: {_log(tmp_path)}"
        engine_pid = int(line)
        assert alive(engine_pid)
        assert "http.server" in command_of(engine_pid)  # the launcher exec'd the command itself

        parent.send_signal(signal.SIGKILL)
        parent.wait()
        await wait_for(lambda: not alive(engine_pid), timeout=30, what="the engine to end with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if engine_pid and alive(engine_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(engine_pid, signal.SIGKILL)


def _log(tmp_path: Path) -> str:
    path = tmp_path / "engine.log"
    return path.read_text()[-2000:] if path.exists() else "(none)"
