"""Child processes the failover and chaos benchmarks start: ``tokenfab controlplane`` instances
that can be killed with -9 and started again; and stopping agent processes at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from controlplane.embedded.etcd import free_port
from tokenfab.parent import die_with_parent


class ControlPlaneProc:
    def __init__(
        self, name: str, work: Path, etcd: str, executor: str, tenants: Path, extra: list[str] | None = None
    ) -> None:
        self.name, self.port = name, free_port()
        self.argv = [
            sys.executable, "-m", "controlplane.cli.main", "controlplane", "--address", f"127.0.0.1:{self.port}",
            "--etcd", etcd, "--tenants", str(tenants), "--executor", f"bench={executor}", "--identity", name,
            "--insecure-local-admin", *(extra or []),
        ]  # fmt: skip
        self.log = work / f"cp-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # a killed benchmark leaves no control plane behind
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def stop_agents(agents: Iterable[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    """SIGCONT (a frozen one cannot stop), SIGTERM, then SIGKILL after ``grace_s``."""
    agents = list(agents)
    for proc in agents:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
    for proc in agents:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
