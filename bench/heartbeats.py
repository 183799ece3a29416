"""Heartbeat throughput and latency of the control plane against a bare gRPC echo baseline.

    python bench/heartbeats.py --nodes 2000 --interval 1 --duration 20

Topology (both servers alike, so the ratio isolates Tokenfab's own cost): the server under test
runs in its own process (the real control plane with a real etcd child, or a bare grpc.aio echo
that returns the same bytes); this process runs N in-process async agent streams, each beating
every ``interval`` seconds with an 8-device telemetry message, starting at a random phase.
Latency is the client-side send -> ack round trip of steady-state beats; each node's first beat
(which moves it Registering -> Ready, an etcd write) is reported apart as first_beat_p99_ms.
Two measurements per server:

* offered load: N streams at the given interval (processed_per_s, p50_ms, p99_ms);
* saturation: ``--saturation-streams`` streams sending back-to-back (closed loop), which is the
  capacity figure the ratio is about (saturated_processed_per_s / saturated_echo_per_s).

Prints one JSON object. No assertions: compare against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
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
from tokenfab.v1 import agent_pb2, agent_pb2_grpc, types_pb2  # noqa: E402

GiB = 1024**3
DEVICES = 8
ECHO_METHOD = "/bench.Echo/Connect"
args_streams_per_channel = 100  # HTTP/2 streams per client connection


# -- servers (run in a child process) ------------------------------------------------------------


async def serve_controlplane(port: int, etcd: str, interval: float) -> None:
    from controlplane.api.server import ControlPlane
    from controlplane.config import ControlPlaneConfig
    from tokenfab.logs import configure

    configure(fmt="json", level="warning")
    # Generous loss timing: the benchmark measures beats, not failure detection.
    config = ControlPlaneConfig(
        address=f"127.0.0.1:{port}", etcd_endpoint=etcd, heartbeat_interval_s=min(max(interval, 0.1), 30.0),
        suspect_after_missed=1000, lost_after_s=86_400,
        insecure_local_admin=True,  # plaintext loopback: the simulated agents are the local admin
    )  # fmt: skip
    plane = ControlPlane(config)
    await plane.start()
    await _serve_until_signal()
    await plane.stop(grace_s=0.5)


async def serve_echo(port: int) -> None:
    async def echo(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            await context.write(message)

    handler = grpc.stream_stream_rpc_method_handler(echo)  # identity (de)serialisers: raw bytes
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("bench.Echo", {"Connect": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await _serve_until_signal()
    await server.stop(0.5)


async def _serve_until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()


def start_server(kind: str, port: int, etcd: str = "", interval: float = 1.0) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        kind,
        "--port",
        str(port),
        "--etcd",
        etcd,
        "--interval",
        str(interval),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "READY" not in line:
        proc.kill()
        raise RuntimeError(f"{kind} server did not start: {line!r}")
    return proc


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- clients (this process) ----------------------------------------------------------------------


def node_id(i: int) -> str:
    return f"bench-{i:06d}"


def registration(i: int) -> agent_pb2.RegisterRequest:
    return agent_pb2.RegisterRequest(
        node_id=node_id(i), cluster="bench", vendor=types_pb2.VENDOR_NVIDIA, agent_version="bench",
        devices=[types_pb2.Device(uuid=f"{node_id(i)}-{d}", index=d, model="H100", memory_bytes=80 * GiB)
                 for d in range(DEVICES)],
    )  # fmt: skip


def heartbeat_bytes(i: int, seq: int) -> bytes:
    beat = agent_pb2.Heartbeat(node_id=node_id(i), seq=seq)
    beat.sent_at.GetCurrentTime()
    for d in range(DEVICES):
        beat.devices.append(
            types_pb2.DeviceTelemetry(
                index=d, utilization_percent=55.5, memory_used_bytes=60 * GiB, temperature_celsius=61.0,
                health=types_pb2.DEVICE_HEALTH_HEALTHY,
            )
        )  # fmt: skip
    return agent_pb2.AgentMessage(heartbeat=beat).SerializeToString()


class Recorder:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.first_beats: list[float] = []
        self.count = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.first_error = ""

    def record(self, seconds: float, *, first: bool = False) -> None:
        if first:  # a node's first beat moves it Registering -> Ready: an etcd write, not a beat
            self.first_beats.append(seconds)
            return
        if self.measuring:
            self.latencies.append(seconds)
            self.count += 1


async def run_streams(
    address: str,
    kind: str,
    first: int,
    streams: int,
    interval: float,
    measure_from: float,
    duration: float,
) -> dict[str, Any]:
    """Streams ``first .. first+streams-1``; each beats every ``interval`` s (0: back-to-back).

    Measures from wall-clock time ``measure_from`` for ``duration`` seconds (so several client
    processes measure the same window) and returns raw counts and latencies.
    """
    channels = [
        grpc.aio.insecure_channel(address) for _ in range(max(1, streams // args_streams_per_channel))
    ]
    rec = Recorder()
    stop = asyncio.Event()

    async def one(i: int) -> None:
        async def pause(seconds: float) -> None:
            if seconds > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), seconds)

        # Open the call only when this stream starts beating, as an agent does: thousands of calls
        # created up front and left idle before their first write fail on that write
        # (CANCELLED / INTERNAL), which measured the load generator rather than the server.
        await pause(random.uniform(0, interval) if interval else 0)
        channel = channels[i % len(channels)]
        if kind == "echo":
            call = channel.stream_stream(ECHO_METHOD)()
        else:
            call = channel.stream_stream(
                "/tokenfab.v1.AgentService/Connect",
                request_serializer=None, response_deserializer=agent_pb2.ControlMessage.FromString,
            )()  # fmt: skip
        seq = 0
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                seq += 1
                payload = heartbeat_bytes(i, seq)
                sent = time.perf_counter()
                await call.write(payload)
                await call.read()
                rec.record(time.perf_counter() - sent, first=seq == 1)
                if interval:
                    next_at += interval
                    await pause(next_at - time.monotonic())
            await call.done_writing()  # half-close and drain: a clean end, not a cancellation
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            # A write after the stream has already ended reports INTERNAL and masks the real status
            # (grpc/grpc#36066); ask the call for the status it actually ended with.
            code, details = exc.code(), exc.details()
            with contextlib.suppress(Exception):
                code = await asyncio.wait_for(call.code(), 1)
                details = await asyncio.wait_for(call.details(), 1)
            rec.errors += 1
            rec.error_kinds[code.name] = rec.error_kinds.get(code.name, 0) + 1
            rec.first_error = rec.first_error or f"{code.name}: {details}"

    tasks = [asyncio.create_task(one(first + i)) for i in range(streams)]
    await asyncio.sleep(max(0.0, measure_from - time.time()))
    rec.measuring = True
    started = time.monotonic()
    await asyncio.sleep(duration)
    rec.measuring = False
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {
        "count": rec.count,
        "elapsed": elapsed,
        "latencies_us": [round(x * 1e6) for x in rec.latencies],
        "first_beats_us": [round(x * 1e6) for x in rec.first_beats],
        "errors": rec.errors,
        "error_kinds": rec.error_kinds,
        "first_error": rec.first_error,
    }


def summarize(parts: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for p in parts for x in p["latencies_us"]) or [float("nan")]
    firsts = sorted(x for p in parts for x in p["first_beats_us"]) or [float("nan")]
    kinds: dict[str, int] = {}
    for p in parts:
        for k, v in p["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return {
        "per_s": sum(p["count"] / p["elapsed"] for p in parts),
        "p50_ms": lat[len(lat) // 2] / 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000,
        "first_beat_p99_ms": firsts[min(len(firsts) - 1, int(len(firsts) * 0.99))] / 1000,
        "errors": sum(p["errors"] for p in parts),
        "error_kinds": kinds,
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), ""),
    }


async def run_load(
    address: str, kind: str, streams: int, interval: float, warmup: float, duration: float, procs: int
) -> dict[str, Any]:
    """The load, in this process (procs == 1) or split over ``procs`` client processes."""
    if procs <= 1:
        return summarize(
            [await run_streams(address, kind, 0, streams, interval, time.time() + warmup, duration)]
        )
    measure_from = time.time() + warmup + 3.0  # margin for the children's imports
    share = -(-streams // procs)
    children = []
    for first in range(0, streams, share):
        count = min(share, streams - first)
        children.append(
            await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--client", kind, "--address", address, "--first", str(first),
                "--count", str(count), "--interval", str(interval), "--measure-from", repr(measure_from),
                "--duration", str(duration), stdout=asyncio.subprocess.PIPE,
            )
        )  # fmt: skip
    outputs = await asyncio.gather(*(child.communicate() for child in children))
    return summarize([json.loads(out) for out, _ in outputs])


async def register_all(address: str, nodes: int) -> float:
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        sem = asyncio.Semaphore(200)

        async def one(i: int) -> None:
            async with sem:
                await stub.Register(registration(i), timeout=60)

        await asyncio.gather(*(one(i) for i in range(nodes)))
    return time.monotonic() - started


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "nodes": args.nodes,
        "interval_s": args.interval,
        "duration_s": args.duration,
        "devices_per_node": DEVICES,
        "message_bytes": len(heartbeat_bytes(0, 1)),
    }
    warmup = max(3.0, args.interval * 2)  # every stream has started and made its first beat

    async def measure(server: subprocess.Popen[str], port: int, kind: str) -> tuple[Any, float, Any]:
        """Offered load, the server's RSS, then saturation; stops the server either way."""
        address = f"127.0.0.1:{port}"
        try:
            if kind == "cp":
                result["register_s"] = round(await register_all(address, args.nodes), 2)
            offered = await run_load(
                address, kind, args.nodes, args.interval, warmup, args.duration, args.client_procs
            )
            rss = round(rss_mib(server.pid), 1)
            saturated = await run_load(
                address, kind, args.saturation_streams, 0, 2, args.saturation_duration, args.client_procs
            )
            return offered, rss, saturated
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)

    with tempfile.TemporaryDirectory() as tmp:
        etcd = EtcdProcess(Path(tmp) / "etcd", log_file=Path(tmp) / "etcd.log")
        await etcd.start()
        try:
            port = free_port()
            cp, result["rss_mib"], sat_cp = await measure(
                start_server("controlplane", port, etcd.endpoint, args.interval), port, "cp"
            )
        finally:
            etcd.stop()
    port = free_port()
    echo, result["echo_rss_mib"], sat_echo = await measure(start_server("echo", port), port, "echo")
    result.update(
        processed_per_s=round(cp["per_s"], 1),
        echo_per_s=round(echo["per_s"], 1),
        ratio=round(cp["per_s"] / echo["per_s"], 3),
        p50_ms=round(cp["p50_ms"], 2),
        p99_ms=round(cp["p99_ms"], 2),
        echo_p50_ms=round(echo["p50_ms"], 2),
        echo_p99_ms=round(echo["p99_ms"], 2),
        first_beat_p99_ms=round(cp["first_beat_p99_ms"], 2),
        offered_per_s=round(args.nodes / args.interval, 1) if args.interval else None,
        saturation_streams=args.saturation_streams,
        client_procs=args.client_procs,
        saturated_processed_per_s=round(sat_cp["per_s"], 1),
        saturated_echo_per_s=round(sat_echo["per_s"], 1),
        saturated_ratio=round(sat_cp["per_s"] / sat_echo["per_s"], 3),
        errors={
            name: {"count": r["errors"], "kinds": r["error_kinds"], "first": r["first_error"]}
            for name, r in (
                ("controlplane", cp),
                ("echo", echo),
                ("saturated_controlplane", sat_cp),
                ("saturated_echo", sat_echo),
            )
            if r["errors"]
        },
        cpus=os.cpu_count(),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between beats per node")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per server")
    parser.add_argument("--saturation-streams", type=int, default=64)
    parser.add_argument("--saturation-duration", type=float, default=8.0)
    parser.add_argument("--client-procs", type=int, default=1, help="client processes sharing the streams")
    parser.add_argument("--serve", choices=["controlplane", "echo"], help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=["cp", "echo"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--measure-from", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--etcd", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "controlplane":
        asyncio.run(serve_controlplane(args.port, args.etcd, args.interval))
    elif args.serve == "echo":
        asyncio.run(serve_echo(args.port))
    elif args.client:
        part = asyncio.run(
            run_streams(args.address, args.client, args.first, args.count, args.interval, args.measure_from,
                        args.duration)
        )  # fmt: skip
        print(json.dumps(part))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
