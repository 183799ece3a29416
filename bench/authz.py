"""Authorization: the matrix from the policy table, and what the interceptor chain and mTLS cost.

    python bench/authz.py --nodes 100 --duration 10

1. The authorization matrix (tests/integration/authz_matrix.py): every RPC of the control plane
   and the executor x 11 kinds of caller over real mTLS; unexpected_allows and unexpected_denies
   should both be 0.
2. Heartbeats processed per second, closed loop (``--nodes`` agent streams beating back to back,
   one connection each), against two control planes measured in the same run, each in its own
   process with its own etcd keyspace:

   * ``secure``: mTLS (a certificate per node from a local CA) and the interceptor chain
     (authentication once per stream, the policy, the node binding, stream limits);
   * ``bare``: plaintext, and a chain that checks nothing (every caller is the local principal;
     no authentication, policy, node binding, limits or audit): the baseline.

   ratio = secure / bare (target >= 0.9).

Prints one JSON object. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controlplane.embedded.etcd import EtcdProcess, free_port  # noqa: E402
from controlplane.security import LOCAL, Authenticator, Kind, LocalCA, Principal, SecurityInterceptor  # noqa: E402
from tokenfab.tls import ClientTLS, client_channel  # noqa: E402
from tokenfab.v1 import agent_pb2, agent_pb2_grpc, types_pb2  # noqa: E402

GiB = 1024**3
DEVICES = 8


# -- servers (child processes) -----------------------------------------------------------------


async def serve(kind: str, port: int, etcd: str, pki_dir: Path) -> None:
    from controlplane.api.server import ControlPlane
    from controlplane.config import ControlPlaneConfig
    from tokenfab.logs import configure

    configure(fmt="json", level="warning")
    settings: dict[str, Any] = {"insecure_local_admin": True}  # plain: agents on loopback, no credentials
    if kind == "secure":
        ca = LocalCA.open(pki_dir)
        issued = ca.issue(Kind.CONTROLPLANE, "bench")
        settings = {"tls_cert": issued.cert, "tls_key": issued.key, "tls_client_ca": ca.cert_file,
                    "max_streams_per_principal": 4}  # fmt: skip
    config = ControlPlaneConfig(
        address=f"127.0.0.1:{port}", etcd_endpoint=etcd, heartbeat_interval_s=1.0,
        suspect_after_missed=1000, lost_after_s=86_400, **settings,
    )  # fmt: skip

    class Bare(ControlPlane):
        """The baseline: the same control plane with no interceptor (benchmark only)."""

        def _security(self, store: Any) -> Any:
            super()._security(store)
            return _Unchecked(Authenticator())

    plane = (ControlPlane if kind == "secure" else Bare)(config)
    await plane.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await plane.stop(grace_s=0.5)


class _Unchecked(SecurityInterceptor):
    """The baseline's chain: every caller is the local principal; no authentication, no policy,
    no node binding, no limits, no audit (benchmark only: handlers still find a principal)."""

    async def _admit(self, method: str, entry: Any, request: Any, context: Any) -> Principal | None:
        return LOCAL


def start_server(kind: str, port: int, etcd: str, pki_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--etcd", etcd, "--pki", str(pki_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "READY" not in line:
        proc.kill()
        raise RuntimeError(f"{kind} server did not start: {line!r}")
    return proc


# -- load (this process) ----------------------------------------------------------------------


def node(i: int) -> str:
    return f"authz-{i:05d}"


def registration(i: int) -> agent_pb2.RegisterRequest:
    return agent_pb2.RegisterRequest(
        node_id=node(i), cluster="bench", vendor=types_pb2.VENDOR_NVIDIA, agent_version="bench",
        devices=[types_pb2.Device(uuid=f"{node(i)}-{d}", index=d, model="H100", memory_bytes=80 * GiB)
                 for d in range(DEVICES)],
    )  # fmt: skip


def beat(i: int, seq: int) -> agent_pb2.AgentMessage:
    message = agent_pb2.Heartbeat(node_id=node(i), seq=seq)
    for d in range(DEVICES):
        message.devices.append(
            types_pb2.DeviceTelemetry(index=d, utilization_percent=55.5, memory_used_bytes=60 * GiB,
                                      temperature_celsius=61.0, health=types_pb2.DEVICE_HEALTH_HEALTHY)
        )  # fmt: skip
    return agent_pb2.AgentMessage(heartbeat=message)


async def saturate(
    address: str, tls: list[ClientTLS | None], duration: float, warmup: float
) -> dict[str, Any]:
    channels = [client_channel(address, t) for t in tls]
    count, errors, measuring = 0, 0, False
    first_error = ""
    stop = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal count, errors, first_error
        stub = agent_pb2_grpc.AgentServiceStub(channels[i])
        try:
            await stub.Register(registration(i), timeout=60)
            call = stub.Connect()
            seq = 0
            while not stop.is_set():
                seq += 1
                await call.write(beat(i, seq))
                await call.read()
                if measuring:
                    count += 1
            call.cancel()
        except grpc.aio.AioRpcError as exc:
            errors += 1
            first_error = first_error or f"{exc.code().name}: {exc.details()}"

    tasks = [asyncio.create_task(one(i)) for i in range(len(tls))]
    await asyncio.sleep(warmup)
    measuring = True
    started = time.monotonic()
    await asyncio.sleep(duration)
    measuring = False
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    for channel in channels:
        await channel.close()
    return {"per_s": round(count / elapsed, 1), "errors": errors, "first_error": first_error}


async def matrix(etcd: EtcdProcess, pki_dir: Path) -> dict[str, Any]:
    from controlplane.api.server import ControlPlane
    from controlplane.config import ControlPlaneConfig
    from tests.integration import authz_matrix as m
    from tests.integration.conftest import Deployment

    deployment = Deployment(pki_dir / "matrix")
    tenants = pki_dir / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  - {name: tenant-a, token: token-a}\n  - {name: tenant-b, token: token-b}\n"
    )
    port = free_port()
    issued = deployment.issue(Kind.CONTROLPLANE, "matrix")
    plane = ControlPlane(
        ControlPlaneConfig(
            address=f"127.0.0.1:{port}", etcd_endpoint=etcd.endpoint, tls_cert=issued.cert, tls_key=issued.key,
            tls_client_ca=deployment.ca.cert_file, operators_file=deployment.operators_file, tenants_file=tenants,
        )
    )  # fmt: skip
    await plane.start()
    tokens = {"tenant-a": "token-a", "tenant-b": "token-b", "admin": deployment.admin_token,
              "viewer": deployment.viewer_token}  # fmt: skip
    who = m.callers(deployment, tokens)
    try:
        outcomes = await m.run_matrix(
            plane.config.address, who, m.CONTROL_PLANE_SERVICES, dial=m.secure_channel
        )
    finally:
        await plane.stop(grace_s=0.1)
    executor_port = free_port()
    server = await m.executor_server(deployment, executor_port)
    try:
        outcomes += await m.run_matrix(
            f"127.0.0.1:{executor_port}", who, m.EXECUTOR_SERVICES, dial=m.secure_channel
        )
    finally:
        await server.stop(0.1)
    result = m.summary(outcomes)
    return {
        "methods": result["methods"], "principals": result["principals"], "cases": result["cases"],
        "unexpected_allows": len(result["unexpected_allows"]), "unexpected_denies": len(result["unexpected_denies"]),
        "unexpected": result["unexpected_allows"] + result["unexpected_denies"],
    }  # fmt: skip


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tf-authz-") as tmp:
        base = Path(tmp)
        etcd = EtcdProcess(base / "etcd", log_file=base / "etcd.log")
        await etcd.start()
        try:
            result: dict[str, Any] = await matrix(etcd, base)
            pki_dir = base / "pki"
            ca = LocalCA.open(pki_dir)
            secure_tls: list[ClientTLS | None] = []
            for i in range(args.nodes):
                issued = ca.issue(Kind.NODE, node(i))
                secure_tls.append(ClientTLS(ca.cert_file, issued.cert, issued.key))
            rounds: dict[str, list[float]] = {"secure": [], "bare": []}
            errors: dict[str, str] = {}
            for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both alike
                for kind in ("bare", "secure"):
                    port = free_port()
                    proc = start_server(kind, port, etcd.endpoint, pki_dir)
                    try:
                        tls = secure_tls if kind == "secure" else [None] * args.nodes
                        got = await saturate(f"127.0.0.1:{port}", tls, args.duration, args.warmup)
                    finally:
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(timeout=30)
                    rounds[kind].append(got["per_s"])
                    if got["errors"]:
                        errors[kind] = f"{got['errors']} streams failed; first: {got['first_error']}"
                    await _wipe(etcd)
        finally:
            etcd.stop()
    secure, bare = max(rounds["secure"]), max(rounds["bare"])
    result.update(
        nodes=args.nodes, duration_s=args.duration, rounds=args.rounds,
        heartbeats_per_s_secure=secure, heartbeats_per_s_bare=bare,
        heartbeats_per_s_rounds=rounds, ratio=round(secure / bare, 3) if bare else None,
        target_ratio=0.9, errors=errors,
    )  # fmt: skip
    return result


async def _wipe(etcd: EtcdProcess) -> None:
    import aetcd

    async with aetcd.Client(host=etcd.host, port=etcd.client_port) as client:
        await client.delete_prefix(b"/")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=["secure", "bare"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--etcd", default="")
    parser.add_argument("--pki", default="")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.etcd, Path(args.pki)))
        return
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
