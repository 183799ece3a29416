"""The gateway's cost and its routing's worth, with real processes, each figure against a baseline
measured in the same run.

    nice -n 10 python bench/gateway.py [--quick]

Processes: a real etcd; ``tokenfab gateway`` processes; replicas as separate processes (the
simulated engine a Ray actor runs, ``SimulatedEngineServer``; and, for the overhead figures, an
*instant* OpenAI-compatible server that answers at once, so that what is measured is the hop and
not an engine). Capacity requests and replica records are written to etcd as the reconciler
writes them; the gateway follows them.

1. added_latency_ms: sequential non-streamed calls to the instant server, directly and through
   the gateway, interleaved in batches; p50 and p99 of each and of the difference (target: p50
   added <= 1 ms).
2. throughput_ratio: closed loop, 32 concurrent clients for ``--seconds``: completed calls/s through
   the gateway over those sent directly (round-robin by the client) to three simulated replicas
   (engine-bound: what a tenant gets; target >= 0.9 on two cores). ``throughput_ratio_cpu_bound``:
   the same against the instant server, where the gateway's extra HTTP hop competes with client and
   server for the same two cores (a worst case, reported, no target).
3. failed_requests: open-loop calls (half streamed) through the gateway to three simulated
   replicas; one replica is killed with SIGKILL mid-run. Calls that failed before their first
   token (target 0), streams cut after it (the client sees an error event), calls served.
4. prefix affinity vs random: 48 shared system prompts of ~6,000 tokens, each call one of them
   plus its own question, streamed; TTFT (client-side, to the first event) p50 and p90 and the
   prefix-cache hit rate (cached prompt tokens over prompt tokens, from the replicas' usage) with
   the gateway's ``affinity`` policy and with ``random``, four replicas, fresh prompts per policy;
   and ``affinity`` again on replica records without their prompt tokens/s
   (``affinity_prompt_as_output``: the router weighs a prompt token as one output token).

Prints one JSON object; no assertions. Record results in docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from controlplane.domain.capacity import CapacityRecord, CapacitySpec, CapacityStatus
from controlplane.domain.nodes import Vendor
from controlplane.domain.replicas import ReplicaRecord, ReplicaState
from controlplane.embedded.etcd import EtcdProcess, free_port
from controlplane.store import keys
from controlplane.store.etcd import EtcdStore
from tokenfab.parent import die_with_parent

MODEL = "qwen2.5-7b-instruct"
TOKEN = "bench-token"
SIM_REPLICA = """
import asyncio, json, signal, sys
from dataclasses import asdict
from controlplane.catalog.perf import EngineProfile
from controlplane.catalog.types import Dtype, load_catalog
from controlplane.executor.adapters import SimulatedEngineServer
from tokenfab.v1 import executor_pb2

async def main() -> None:
    catalog = load_catalog()
    profile = EngineProfile.of(catalog.model(sys.argv[1]), catalog.accelerator(sys.argv[2]), 1, Dtype.BF16)
    server = SimulatedEngineServer(sys.argv[1], executor_pb2.SimulatedEngine(
        profile_json=json.dumps(asdict(profile)), max_batch=profile.max_batch))
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"endpoint": server.endpoint}), flush=True)
    await stop.wait()
    await server.stop(5.0)

asyncio.run(main())
"""
INSTANT_REPLICA = """
import asyncio, json, sys
from aiohttp import web
BODY = json.dumps({"id": "x", "object": "text_completion", "model": sys.argv[1],
    "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}).encode()
async def complete(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def main():
    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"endpoint": f"http://127.0.0.1:{runner.addresses[0][1]}"}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Child:
    def __init__(self, argv: list[str], log: Path | None = None, *, reads_endpoint: bool = False) -> None:
        out = log.open("ab") if log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE if reads_endpoint else out, stderr=out,
            start_new_session=True, preexec_fn=die_with_parent(),
        )  # fmt: skip
        self.endpoint = ""
        if reads_endpoint:
            assert self.proc.stdout is not None
            self.endpoint = json.loads(self.proc.stdout.readline())["endpoint"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def replica(script: str, model: str = MODEL, accelerator: str = "H100") -> Child:
    return Child([sys.executable, "-c", script, model, accelerator], reads_endpoint=True)


class Bench:
    def __init__(self, work: Path, etcd: EtcdProcess, store: EtcdStore) -> None:
        self.work, self.etcd, self.store = work, etcd, store
        self.tenants = work / "tenants.yaml"
        self.tenants.write_text(f"tenants:\n  - name: bench\n    token: {TOKEN}\n")
        self.children: list[Child] = []
        self.seq = 0

    async def gateway(self, *extra: str) -> tuple[Child, str]:
        port = free_port()
        gw = Child(
            [sys.executable, "-m", "controlplane.cli.main", "gateway", "--tenants", str(self.tenants),
             "--listen", f"127.0.0.1:{port}", "--etcd", self.etcd.endpoint, "--log-level", "warning", *extra],
            self.work / f"gateway-{port}.log",
        )  # fmt: skip
        self.children.append(gw)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                try:
                    async with s.get(url + "/healthz") as r:
                        if r.status == 200:
                            return gw, url
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("gateway did not start")

    async def lane(
        self, endpoints: list[str], *, reserved: float = 1e6, model: str = MODEL, prompt_rate: bool = True
    ) -> str:
        """A fresh capacity request with these Ready replicas; returns its id. ``prompt_rate``: the
        records carry their prompt tokens/s (as the reconciler writes them), else not (older records:
        the router weighs a prompt token as one output token)."""
        self.seq += 1
        rid = f"bench-{self.seq}"
        now = datetime.now(UTC)
        spec = CapacitySpec.model_validate(
            {
                "model": model,
                "output_tokens_per_second": reserved,
                "latency": {"ttft_p95_ms": 60000, "tpot_p95_ms": 50},
            }
        )
        for kv in (await self.store.list_prefix(keys.ROOT))[0]:  # one lane at a time
            await self.store.compare_and_delete(kv.key, expected_mod_revision=kv.mod_revision)
        record = CapacityRecord(id=rid, tenant="bench", spec=spec, status=CapacityStatus(), created_at=now)
        await self.store.put(keys.capacity_request(rid), record.model_dump_json().encode())
        for i, endpoint in enumerate(endpoints):
            r = ReplicaRecord(
                id=f"{rid}-r{i}", request_id=rid, tenant="bench", model=model, vendor=Vendor.NVIDIA,
                accelerator="H100", cluster="bench", node_id=f"n{i}", devices=(0,), tensor_parallel=1,
                engine="simulated", dtype="bf16", state=ReplicaState.READY,
                predicted_output_tokens_per_second=3000.0, endpoint=endpoint, created_at=now, updated_at=now,
                # as the reconciler records it: prompt tokens/s at the request's declared mix
                predicted_input_tokens_per_second=(
                    3000.0 * spec.mean_input_tokens / spec.mean_output_tokens if prompt_rate else 0.0
                ),
            )  # fmt: skip
            await self.store.put(keys.replica(r.id), r.model_dump_json().encode())
        return rid

    async def routable(self, url: str, count: int) -> None:
        async with aiohttp.ClientSession() as s:
            for _ in range(400):
                async with s.get(url + "/v1/models", headers=AUTH) as r:
                    data = (await r.json())["data"]
                if any(m["replicas"] == count for m in data):
                    return
                await asyncio.sleep(0.05)
        raise RuntimeError("gateway never saw the replicas")


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def timed_post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, int]:
    start = time.perf_counter()
    async with session.post(url, json=body, headers=AUTH) as r:
        await r.read()
        return time.perf_counter() - start, r.status


async def added_latency(bench: Bench, gw_url: str, instant: Child, calls: int) -> dict[str, float]:
    await bench.lane([instant.endpoint])
    await bench.routable(gw_url, 1)
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 1}
    direct: list[float] = []
    via: list[float] = []
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector) as s:
        for _ in range(100):  # warm both paths (connections, code)
            await timed_post(s, instant.endpoint + "/v1/completions", body)
            await timed_post(s, gw_url + "/v1/completions", body)
        for _ in range(calls // 50):
            for _ in range(50):
                direct.append((await timed_post(s, instant.endpoint + "/v1/completions", body))[0])
            for _ in range(50):
                via.append((await timed_post(s, gw_url + "/v1/completions", body))[0])
    ms = 1000.0
    return {
        "direct_p50_ms": round(pct(direct, 0.5) * ms, 3),
        "direct_p99_ms": round(pct(direct, 0.99) * ms, 3),
        "gateway_p50_ms": round(pct(via, 0.5) * ms, 3),
        "gateway_p99_ms": round(pct(via, 0.99) * ms, 3),
        "added_p50_ms": round((pct(via, 0.5) - pct(direct, 0.5)) * ms, 3),
        "added_p99_ms": round((pct(via, 0.99) - pct(direct, 0.99)) * ms, 3),
    }


async def closed_loop(urls: list[str], body: dict[str, Any], seconds: float, concurrency: int = 32) -> float:
    """Completed calls/s with ``concurrency`` clients, each sending the next call when one ends
    (round-robin over ``urls``)."""
    done = 0
    failed = 0
    deadline = time.monotonic() + seconds

    async def client(i: int, s: aiohttp.ClientSession) -> None:
        nonlocal done, failed
        n = i
        while time.monotonic() < deadline:
            n += 1
            _, status = await timed_post(s, urls[n % len(urls)], body)
            if status == 200:
                done += 1
            else:
                failed += 1

    start = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await asyncio.gather(*(client(i, s) for i in range(concurrency)))
    if failed:
        print(json.dumps({"warning": f"{failed} calls failed in a throughput run"}), file=sys.stderr)
    return done / (time.monotonic() - start)


async def throughput(
    bench: Bench, gw_url: str, instant: Child, sims: list[Child], seconds: float
) -> dict[str, float]:
    body = {"model": MODEL, "prompt": [7] * 64, "max_tokens": 64}
    await bench.lane([s.endpoint for s in sims])
    await bench.routable(gw_url, len(sims))
    direct = await closed_loop([s.endpoint + "/v1/completions" for s in sims], body, seconds)
    via = await closed_loop([gw_url + "/v1/completions"], body, seconds)
    await bench.lane([instant.endpoint])
    await bench.routable(gw_url, 1)
    small = {"model": MODEL, "prompt": "hello", "max_tokens": 1}
    direct_cpu = await closed_loop([instant.endpoint + "/v1/completions"], small, seconds)
    via_cpu = await closed_loop([gw_url + "/v1/completions"], small, seconds)
    return {
        "direct_calls_per_s": round(direct, 1),
        "gateway_calls_per_s": round(via, 1),
        "throughput_ratio": round(via / direct, 3),
        "cpu_bound_direct_calls_per_s": round(direct_cpu, 1),
        "cpu_bound_gateway_calls_per_s": round(via_cpu, 1),
        "throughput_ratio_cpu_bound": round(via_cpu / direct_cpu, 3),
    }


async def one_streamed(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Client-side view of one streamed call: status, ttft, whether it ended with [DONE], usage."""
    start = time.perf_counter()
    out: dict[str, Any] = {"status": 0, "ttft": None, "done": False, "usage": None, "error": None}
    try:
        async with s.post(
            url, json={**body, "stream": True, "stream_options": {"include_usage": True}}, headers=AUTH
        ) as r:
            out["status"] = r.status
            if r.status != 200:
                await r.read()
                return out
            async for line in r.content:
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                if out["ttft"] is None:
                    out["ttft"] = time.perf_counter() - start
                if line == b"data: [DONE]":
                    out["done"] = True
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    out["usage"] = event["usage"]
                if event.get("error"):
                    out["error"] = event["error"]["code"]
    except (aiohttp.ClientError, OSError) as exc:
        out["error"] = type(exc).__name__
    return out


async def replica_kill(bench: Bench, gw_url: str, seconds: float) -> dict[str, Any]:
    sims = [replica(SIM_REPLICA) for _ in range(3)]
    bench.children += sims
    await bench.lane([s.endpoint for s in sims])
    await bench.routable(gw_url, 3)
    rng = random.Random(3)
    results: list[tuple[bool, dict[str, Any]]] = []  # (streamed, outcome)

    async def plain(s: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        try:
            _, status = await timed_post(s, gw_url + "/v1/completions", body)
        except (aiohttp.ClientError, OSError):
            status = 0
        results.append((False, {"status": status, "ttft": None, "done": status == 200, "error": None}))

    async def streamed(s: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        results.append((True, await one_streamed(s, gw_url + "/v1/completions", body)))

    tasks = []
    start = time.monotonic()
    killed = False
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        while time.monotonic() - start < seconds:
            body = {
                "model": MODEL,
                "prompt": [rng.randrange(50000) for _ in range(200)],
                "max_tokens": rng.randint(50, 300),
            }
            tasks.append(asyncio.create_task((streamed if rng.random() < 0.5 else plain)(s, body)))
            if not killed and time.monotonic() - start > seconds / 3:
                sims[0].kill()
                killed = True
            await asyncio.sleep(rng.expovariate(40.0))
        await asyncio.gather(*tasks)
    before_first = [o for st, o in results if not o["done"] and o["ttft"] is None]
    cut = [o for st, o in results if st and o["ttft"] is not None and not o["done"]]
    for s in sims[1:]:
        s.kill()
    return {
        "calls": len(results),
        "served": sum(1 for _, o in results if o["done"]),
        "failed_requests": len(before_first),
        "streams_cut_after_first_token": len(cut),
        "cut_streams_with_error_event": sum(1 for o in cut if o["error"] == "stream_cut"),
    }


PREFIX_MODEL, PREFIX_ACCELERATOR = "llama-3.1-8b-instruct", "910B4"  # a KV cache of ~97k tokens


async def prefix_run(
    bench: Bench, policy: str, args: argparse.Namespace, seed: int, *, prompt_rate: bool = True
) -> dict[str, Any]:
    sims = [replica(SIM_REPLICA, PREFIX_MODEL, PREFIX_ACCELERATOR) for _ in range(4)]
    bench.children += sims
    gw, url = await bench.gateway("--policy", policy)
    await bench.lane([s.endpoint for s in sims], model=PREFIX_MODEL, prompt_rate=prompt_rate)
    await bench.routable(url, 4)
    rng = random.Random(seed)
    words = args.prefix_tokens * 4 // 24  # ~24 characters a word below, ~4 characters a token
    systems = [
        " ".join(f"{policy}-{seed}-{g:03d}-{rng.randrange(10**12):012d}" for _ in range(words))
        for g in range(args.prefix_groups)
    ]
    calls, rate = args.prefix_calls, args.prefix_rate
    outcomes: list[dict[str, Any]] = []

    async def call(s: aiohttp.ClientSession) -> None:
        question = " ".join(str(rng.randrange(10**6)) for _ in range(30))
        body = {"model": PREFIX_MODEL, "messages": [{"role": "system", "content": rng.choice(systems)},
                                             {"role": "user", "content": question}], "max_tokens": 16}  # fmt: skip
        outcomes.append(await one_streamed(s, url + "/v1/chat/completions", body))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        tasks = []
        for _ in range(calls):
            tasks.append(asyncio.create_task(call(s)))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    gw.kill()
    for r in sims:
        r.kill()
    ttfts = [o["ttft"] for o in outcomes if o["done"] and o["ttft"] is not None]
    usages = [o["usage"] for o in outcomes if o["usage"]]
    prompt = sum(u["prompt_tokens"] for u in usages)
    cached = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for u in usages)
    return {
        "calls": len(outcomes),
        "served": len(ttfts),
        "ttft_p50_ms": round(pct(ttfts, 0.5) * 1000, 1),
        "ttft_p90_ms": round(pct(ttfts, 0.9) * 1000, 1),
        "prefix_hit_rate": round(cached / prompt, 3) if prompt else 0.0,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tf-bench-gw-"))
    etcd = EtcdProcess(work / "etcd", log_file=work / "etcd.log")
    await etcd.start()
    store = EtcdStore(etcd.host, etcd.client_port)
    await store.connect()
    bench = Bench(work, etcd, store)
    result: dict[str, Any] = {"cores": os.cpu_count()}
    try:
        instant = replica(INSTANT_REPLICA)
        sims = [replica(SIM_REPLICA) for _ in range(3)]
        bench.children += [instant, *sims]
        gw, url = await bench.gateway("--policy", "least_load")
        result["latency"] = await added_latency(bench, url, instant, args.calls)
        result["throughput"] = await throughput(bench, url, instant, sims, args.seconds)
        for s in sims:
            s.kill()
        result["replica_kill"] = await replica_kill(bench, url, args.seconds)
        gw.kill()
        result["prefix_routing"] = {
            policy: await prefix_run(bench, policy, args, seed)
            for seed, policy in enumerate(("affinity", "random"))
        }
        # the same affinity policy on records without the prompt rate (a prompt token weighs one
        # output token in the router's load): the baseline of the prompt weighting
        result["prefix_routing"]["affinity_prompt_as_output"] = await prefix_run(
            bench, "affinity", args, 2, prompt_rate=False
        )
        a, r = result["prefix_routing"]["affinity"], result["prefix_routing"]["random"]
        result["prefix_routing"]["ttft_p90_ratio_random_over_affinity"] = round(
            r["ttft_p90_ms"] / a["ttft_p90_ms"], 2
        )
    finally:
        for child in bench.children:
            child.kill()
        await store.close()
        etcd.stop()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per path (latency)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput and kill runs")
    parser.add_argument("--prefix-calls", type=int, default=300)
    parser.add_argument("--prefix-rate", type=float, default=6.0, help="calls/s, shared-prefix workload")
    parser.add_argument("--prefix-groups", type=int, default=48, help="distinct shared system prompts")
    parser.add_argument("--prefix-tokens", type=int, default=6000, help="tokens of each shared system prompt")
    parser.add_argument("--quick", action="store_true", help="small figures, to check the script works")
    ns = parser.parse_args()
    if ns.quick:
        ns.calls, ns.seconds, ns.prefix_calls, ns.prefix_groups = 200, 3.0, 60, 12
    print(json.dumps(asyncio.run(main(ns)), indent=2))
