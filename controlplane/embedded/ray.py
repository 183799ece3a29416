"""Local Ray clusters and executors for ``tokenfab up``, the tests and the benchmarks.

:class:`RayHead` runs ``ray start --head --block`` (no CPUs, no accelerators: the agents' raylets
bring those) on a free loopback port with its own temp dir. :class:`ExecutorProcess` runs
``tokenfab executor`` for one cluster and waits until its gRPC health check says SERVING.
Both are children in their own process group, stopped with SIGTERM and then SIGKILL, and sent
SIGTERM by the kernel when their parent dies however it dies (``ray start --block`` then stops
the Ray processes it started; the executor stops its engines).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from controlplane.embedded.etcd import free_port
from tokenfab.errors import PermanentError
from tokenfab.logs import get_logger
from tokenfab.parent import ENV as PARENT_ENV
from tokenfab.parent import die_with_parent

log = get_logger("embedded.ray")


class RayError(PermanentError, RuntimeError):
    """A local Ray head could not be started or joined (missing binary, exit, no listener)."""


def _ray_binary() -> str:
    found = shutil.which("ray", path=os.path.dirname(sys.executable))
    if found is None:
        raise RayError("ray: the `ray` command is not installed next to this Python (pip install ray)")
    return found


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it: while it is a zombie its process group
    id cannot be handed to anyone else, so the SIGKILL to the group below hits only its own."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already
        return True


def _stop(proc: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """SIGTERM to the child alone (``ray start --block`` stops the processes it started, in 0.3 s;
    SIGTERM to its whole group at once took it 2.3 s, docs/benchmarks.md "Lighter Ray starts and
    stops"), then SIGKILL to whatever is left of its process group (everything, after ``grace_s``),
    then reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while not _exited(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path, limit: int = 600) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


class _Child:
    """A child process of ``tokenfab up`` listening on a free loopback port, logging to a file."""

    def __init__(self, *, log_file: Path, port: int | None = None) -> None:
        self.log_file = log_file
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _popen(self, argv: list[str], env: dict[str, str]) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=die_with_parent(),  # SIGTERM when the parent dies
            )  # fmt: skip

    def stop(self, grace_s: float = 10.0) -> None:
        _stop(self.proc, grace_s)
        self.proc = None


class RayHead(_Child):
    def __init__(self, temp_dir: Path, *, log_file: Path, port: int | None = None) -> None:
        super().__init__(log_file=log_file, port=port)
        self.temp_dir = temp_dir

    def start(self, timeout_s: float = 60.0) -> None:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            _ray_binary(), "start", "--head", "--block", "--port", str(self.port),
            "--node-ip-address", "127.0.0.1", "--num-cpus", "0", "--num-gpus", "0",
            "--include-dashboard", "false", "--include-log-monitor", "false",  # as on the agents' raylets
            "--no-monitor",  # no Ray autoscaler: Tokenfab scales (KubeRay too passes it when it scales)
            "--disable-usage-stats", "--temp-dir", str(self.temp_dir),
            "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
        ]  # fmt: skip
        # On SIGTERM, `ray start --block` first drains its node for up to 30 s (Ray 2.60, node.py,
        # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S). The head runs no replicas (--num-cpus 0), so there
        # is nothing to drain: without this every stop sat out its whole grace and was killed.
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        self._popen(argv, env)
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RayError(f"ray head exited with {self.proc.returncode} (log: {self.log_file})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("ray.head_started", address=self.address, temp_dir=str(self.temp_dir))
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RayError(f"ray head did not listen on {self.address} within {timeout_s:g} s")

    def stop(self, grace_s: float = 20.0) -> None:
        super().stop(grace_s)


class ExecutorProcess(_Child):
    def __init__(
        self,
        cluster: str,
        ray_address: str,
        *,
        log_file: Path,
        port: int | None = None,
        tls: Any = None,  # tokenfab.tls.ClientTLS: serve mTLS with this identity, probe health with it
        insecure_local_admin: bool = False,  # plaintext only: loopback callers are the admin (tests)
    ) -> None:
        super().__init__(log_file=log_file, port=port)
        self.cluster = cluster
        self.ray_address = ray_address
        self.tls = tls
        self.insecure_local_admin = insecure_local_admin

    def spawn(self) -> None:
        argv = [
            sys.executable, "-m", "controlplane.cli.main", "executor", "--cluster", self.cluster,
            "--ray-address", self.ray_address, "--listen", self.address, "--log-format", "json",
        ]  # fmt: skip
        if self.tls is not None:
            argv += ["--tls-cert", str(self.tls.cert_file), "--tls-key", str(self.tls.key_file),
                     "--tls-client-ca", str(self.tls.ca_file)]  # fmt: skip
        if self.insecure_local_admin:
            argv.append("--insecure-local-admin")
        self._popen(argv, {**os.environ, PARENT_ENV: str(os.getpid())})  # it stops if its parent dies

    async def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Wait for SERVING. ``ray.init`` against a fresh head takes seconds when the machine is
        idle and can take minutes on a loaded two-core one, hence the generous default."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from tokenfab.tls import client_channel

        deadline = time.monotonic() + timeout_s
        async with client_channel(self.address, self.tls) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RayError(
                        f"executor {self.cluster} exited with {self.proc.returncode} (log: {self.log_file})"
                    )
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.3)
        raise RayError(
            f"executor {self.cluster} not serving on {self.address} within {timeout_s:g} s"
            f" (log: {self.log_file}; last lines: {_tail(self.log_file)!r})"
        )


CHILDREN_FILE = "children.json"


def remember_children(state_dir: Path, children: Iterable[tuple[int | None, str]]) -> None:
    """Record ``(process group, marker)`` of long-lived children (Ray heads, etcd), so a later
    ``up`` can clean up after one that was killed outright."""
    entries = [{"pgid": pgid, "marker": marker} for pgid, marker in children if pgid]
    (state_dir / CHILDREN_FILE).write_text(json.dumps(entries))


def reap_stale_children(state_dir: Path) -> int:
    """Kill the process groups a previous ``up`` left running; returns how many.

    Only a group whose leader's command line still contains its marker (the head's temp dir,
    etcd's data dir) is killed, so a recycled process id is never touched.
    """
    path = state_dir / CHILDREN_FILE
    killed = 0
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        for entry in json.loads(path.read_text()):
            pgid, marker = int(entry["pgid"]), str(entry["marker"])
            try:
                cmdline = (
                    Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if marker and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                    killed += 1
                    log.warning("up.stale_child_killed", pgid=pgid, marker=marker)
    with contextlib.suppress(OSError):
        path.unlink()
    if killed:
        time.sleep(0.5)  # let the kernel release their ports and locks
    return killed
