"""Chaos: inject one kind of fault at random moments while capacity requests are created and
cancelled; check that nothing acknowledged is lost and nothing is left duplicated.

    python bench/chaos.py --fault leader-kill --iterations 20 [--seed 7]
    python bench/chaos.py --fault all --iterations 1       # every fault in turn, in one world

Processes: a real three-member etcd cluster, one local Ray cluster (head, executor process), two
simulated 4 x H100 nodes (agent processes with raylets, talking to instance "c" through one
loopback relay each), three ``tokenfab controlplane`` processes ("a", "b", "c"; leader TTL 5 s).
Each iteration: a create (while fewer than three requests are active) or a cancel, sent to a
random instance, and at a random moment within 0-2 s of it the fault (``--fault``):

- ``leader-kill``: kill -9 of whichever instance leads, restarted at once.
- ``leader-pause``: SIGSTOP of the leader for TTL + 2 s (a successor is elected meanwhile), then
  SIGCONT: the old leader wakes up mid-pass and must not act (fenced writes).
- ``etcd-member``: kill -9 of a random etcd member, restarted 3 s later.
- ``compaction``: kill -9 of the member every instance talks to, two writes, a compaction of
  etcd's history at that revision, the member back 2 s later: every watcher resumes on another
  member from a compacted revision and must list again.
- ``agent-partition``: one agent's relay goes silent (connections stay open, no bytes pass)
  for 3-12 s: the node goes Suspect (Lost after 10 s) and back.

Then the system must converge: every acknowledged request is there with its acknowledged state
(lost_requests otherwise), every active one is Ready with no surplus replica and every cancelled
one has none left (duplicate_replicas counts surplus live replicas plus Ray actors no live
replica claims), within ``--converge`` seconds (convergence_s from the fault's start). Prints one
JSON object; no assertions.

``--fault`` also takes several faults (``leader-kill,compaction``) or ``all``: they run one
after another in the same world, ``--iterations`` each (every iteration converges before the
next, and the requests acknowledged so far stay judged), and the JSON object holds one result
per fault under ``faults``, each with the single-fault keys (its evidence counted over its own
iterations).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench.procs import ControlPlaneProc as Plane  # noqa: E402
from bench.procs import stop_agents  # noqa: E402
from controlplane.domain.capacity import CapacityRecord  # noqa: E402
from controlplane.domain.replicas import LIVE, ReplicaRecord  # noqa: E402
from controlplane.embedded.etcd import EtcdCluster  # noqa: E402
from controlplane.embedded.ray import ExecutorProcess, RayHead  # noqa: E402
from controlplane.executor.service import RemoteExecutor  # noqa: E402
from controlplane.store import keys  # noqa: E402
from controlplane.store.etcd import EtcdStore  # noqa: E402
from tokenfab.logs import configure  # noqa: E402
from tokenfab.parent import die_with_parent  # noqa: E402
from tokenfab.v1 import capacity_pb2, capacity_pb2_grpc, fleet_pb2, fleet_pb2_grpc, types_pb2  # noqa: E402

TOKEN = (("authorization", "Bearer bench-token"),)
NODES = ("ch-0", "ch-1")
TARGET = 3000.0  # one H100 replica of Qwen2.5-7B
LEADER_TTL_S = 5
FAULTS = ("leader-kill", "leader-pause", "etcd-member", "compaction", "agent-partition")


class Relay:
    """A loopback TCP relay to one control-plane instance that can go silent: connections stay
    open but no byte passes either way (no FIN, no RST), as over a cut link."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.silent = False
        self.server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while self.silent:  # a connection made during the partition hears nothing
                await asyncio.sleep(0.2)
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):  # the target is down, or the relay is stopping
            writer.close()
            return
        self._conns.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    while self.silent:  # held while silent (TCP retransmits once the link is back)
                        await asyncio.sleep(0.05)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # the relay is stopping
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self._conns):
            conn.close()


@dataclass
class World:
    """Everything a fault may act on."""

    cluster: EtcdCluster
    store: EtcdStore
    planes: dict[str, Plane]
    relays: dict[str, Relay] = field(default_factory=dict)
    compactions: int = 0


async def state(
    store: EtcdStore, client: RemoteExecutor
) -> tuple[dict[str, CapacityRecord], list[ReplicaRecord], set[str]]:
    kvs, _ = await store.list_prefix(keys.CAPACITY_REQUESTS)
    requests = {r.id: r for r in (CapacityRecord.model_validate_json(kv.value) for kv in kvs)}
    kvs, _ = await store.list_prefix(keys.REPLICAS)
    replicas = [ReplicaRecord.model_validate_json(kv.value) for kv in kvs]
    actors = {o.replica_id for o in await client.observe()}
    return requests, replicas, actors


def judge(expected: dict[str, bool], requests: dict[str, CapacityRecord], replicas: list[ReplicaRecord],
          actors: set[str]) -> tuple[int, int, bool]:  # fmt: skip
    """(lost, duplicates, converged) for the acknowledged requests (id -> should be active)."""
    lost = sum(1 for rid, active in expected.items() if rid not in requests or requests[rid].active != active)
    live = [r for r in replicas if r.state in LIVE]
    surplus = 0
    converged = True
    for rid, active in expected.items():
        mine = [r for r in live if r.request_id == rid]
        if not active:
            surplus += len(mine)
            converged &= not mine
            continue
        ready = sum(r.predicted_output_tokens_per_second for r in mine if r.state.value == "Ready")
        smallest = min((r.predicted_output_tokens_per_second for r in mine), default=0.0)
        total = sum(r.predicted_output_tokens_per_second for r in mine)
        extra = 1 if mine and total - smallest >= TARGET - 1e-6 else 0
        surplus += extra
        converged &= ready >= TARGET - 1e-6 and not extra
    claimed = {r.id for r in replicas if r.state.value not in ("Stopped", "Failed")}
    orphans = len(actors - claimed)
    converged &= orphans == 0
    return lost, surplus + orphans, converged


async def leader(store: EtcdStore) -> str:
    kv = await store.get(keys.LEADER)
    return json.loads(kv.value)["identity"] if kv is not None else ""


async def inject(fault: str, world: World, rng: random.Random) -> str:
    """Carry out one fault; returns what was hit. Ends with everything running again."""
    if fault in ("leader-kill", "leader-pause"):
        name = await leader(world.store) or "a"
        plane = world.planes[name]
        if fault == "leader-kill":
            plane.kill()
            plane.start()
        else:
            assert plane.proc is not None
            os.kill(plane.proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(LEADER_TTL_S + 2)  # past its lease: a successor leads
            finally:
                os.kill(plane.proc.pid, signal.SIGCONT)
        return name
    if fault == "etcd-member":
        member = rng.choice(world.cluster.members)
        member.kill()
        await asyncio.sleep(3)
        await member.start()
        return member.name
    if fault == "compaction":
        # the member every instance talks to: they all start on the first and, when it dies, move
        # on to the next in order, so hitting the members in turn always hits theirs
        member = world.cluster.members[world.compactions % len(world.cluster.members)]
        world.compactions += 1
        member.kill()  # every watch breaks; its owner retries a second later, on another member
        await world.store.put("/chaos/tick", b"1")
        revision = await world.store.put("/chaos/tick", b"2")
        await world.store.compact(revision)  # before they resume: every resume revision is gone
        await asyncio.sleep(2)
        await member.start()
        return f"{member.name}@{revision}"
    if fault == "agent-partition":
        node = rng.choice(sorted(world.relays))
        relay = world.relays[node]
        relay.silent = True
        try:
            await asyncio.sleep(rng.uniform(3, 12))
        finally:
            relay.silent = False
        return node
    raise ValueError(f"fault: expected one of {', '.join(FAULTS)}, got {fault!r}")


async def operate(
    target: Plane, active: list[str], i: int, spec: Any, expected: dict[str, bool], rng: random.Random
) -> str | None:
    """One create or cancel; only an acknowledged call adds to what is expected. Returns which
    call was acknowledged ("create", "cancel"), or None."""
    try:
        async with grpc.aio.insecure_channel(target.address) as channel:
            stub = capacity_pb2_grpc.CapacityServiceStub(channel)
            if len(active) < 3 and (not active or rng.random() < 0.6):
                create = capacity_pb2.CreateCapacityRequest(spec=spec, idempotency_key=f"chaos-{i}")
                got = await stub.Create(create, metadata=TOKEN, timeout=10)
                expected[got.id] = True
                return "create"
            victim = rng.choice(active)
            try:
                await stub.Cancel(capacity_pb2.CancelCapacityRequest(id=victim), metadata=TOKEN, timeout=10)
            except grpc.aio.AioRpcError:
                expected.pop(victim, None)  # applied or not, unknown: no longer judged
                raise
            expected[victim] = False
            return "cancel"
    except grpc.aio.AioRpcError:
        return None  # not acknowledged (its instance was the one hit): nothing is expected of it


async def registered_everywhere(planes: dict[str, Plane], nodes: tuple[str, ...]) -> bool:
    """Whether every instance lists every one of ``nodes`` as Ready (as the local admin)."""
    for plane in planes.values():
        try:
            async with grpc.aio.insecure_channel(plane.address) as channel:
                listed = await fleet_pb2_grpc.FleetServiceStub(channel).ListNodes(
                    fleet_pb2.ListNodesRequest(), timeout=5
                )
        except grpc.aio.AioRpcError:
            return False
        if not set(nodes) <= {n.node_id for n in listed.nodes if n.state == types_pb2.NODE_STATE_READY}:
            return False
    return True


def start_agent(
    node: str, work: Path, fleet: Path, address: str, epoch: str, ray: str
) -> subprocess.Popen[bytes]:
    with (work / f"agent-{node}.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli.main", "agent", "--backend", "simulated", "--node", node,
             "--fleet", str(fleet), "--address", address, "--sim-epoch", epoch,
             "--ray-address", ray, "--ray-temp-dir", str(work / node)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent(),
        )  # fmt: skip


def evidence(work: Path) -> dict[str, int]:
    """What the instances' logs say they did about the faults (a fault that changed nothing
    would show here as zeros)."""
    markers = {"followers_relisted": "follow.resynced", "fenced_passes": "reconcile.fenced",
               "elections": "election.leader"}  # fmt: skip
    counts = dict.fromkeys(markers, 0)
    for log in work.glob("cp-*.log"):
        text = log.read_text(errors="replace")
        for name, marker in markers.items():
            counts[name] += text.count(f'"{marker}"')
    return counts


def fault_list(text: str) -> list[str]:
    """``--fault``: one fault, several separated by commas (in that order), or ``all``."""
    if text.strip() == "all":
        return list(FAULTS)
    faults = [f.strip() for f in text.split(",") if f.strip()]
    wrong = [f for f in faults if f not in FAULTS]
    if wrong or not faults or len(set(faults)) != len(faults):
        raise argparse.ArgumentTypeError(
            f"expected one or more of {', '.join(FAULTS)} (comma-separated, each once) or all; got {text!r}"
        )
    return faults


@dataclass
class Run:
    """What every fault's iterations share: the world, the executor's view, the acknowledged
    requests (id -> should be active) and the random source."""

    world: World
    client: RemoteExecutor
    work: Path
    rng: random.Random
    converge_s: float
    expected: dict[str, bool] = field(default_factory=dict)
    step: int = 0  # iterations so far over every fault (idempotency keys stay unique)


SPEC = capacity_pb2.CapacitySpec(
    model="qwen2.5-7b-instruct", output_tokens_per_second=TARGET, allowed_accelerators=["H100"],
    latency=capacity_pb2.LatencyClass(ttft_p95_ms=1000, tpot_p95_ms=50),
)  # fmt: skip


async def iteration(run: Run, fault: str) -> tuple[str, str | None, float | None, int, int]:
    """One call and one fault, then wait for convergence: (hit, the call acknowledged or None,
    converged_s or None, lost, dups)."""
    rng, planes = run.rng, run.world.planes
    target = planes[rng.choice("abc")]
    active = [rid for rid, on in run.expected.items() if on]
    op = asyncio.create_task(operate(target, active, run.step, SPEC, run.expected, rng))
    run.step += 1
    await asyncio.sleep(rng.uniform(0, 2))
    fault_at = time.monotonic()
    victim = await inject(fault, run.world, rng)
    acknowledged = await op
    done = None
    while time.monotonic() - fault_at < run.converge_s:
        with contextlib.suppress(Exception):  # an executor or etcd hiccup: look again
            _, _, converged = judge(run.expected, *await state(run.world.store, run.client))
            if converged:
                done = time.monotonic() - fault_at
                break
        await asyncio.sleep(0.25)
    lost, dups, _ = judge(run.expected, *await state(run.world.store, run.client))
    return victim, acknowledged, done, lost, dups


async def run_fault(run: Run, fault: str, iterations: int) -> dict[str, Any]:
    """``iterations`` of one fault; its figures (evidence: the log lines its iterations added)."""
    began, acknowledged_before, evidence_before = time.monotonic(), set(run.expected), evidence(run.work)
    convergence: list[float] = []
    lost_total, dup_max, failures = 0, 0, 0
    hit: dict[str, int] = {}
    calls = {"create": 0, "cancel": 0}
    for i in range(iterations):
        victim, acknowledged, done, lost, dups = await iteration(run, fault)
        hit[victim.split("@")[0]] = hit.get(victim.split("@")[0], 0) + 1
        if acknowledged is not None:
            calls[acknowledged] += 1
        lost_total += lost
        dup_max = max(dup_max, dups)
        if done is None:
            failures += 1
        else:
            convergence.append(done)
        print(json.dumps({"iteration": i, "fault": fault, "hit": victim, "converged_s": done and round(done, 2),
                          "lost": lost, "duplicates": dups}), file=sys.stderr, flush=True)  # fmt: skip
    counts = evidence(run.work)
    return {
        "fault": fault,
        "iterations": iterations,
        "lost_requests": lost_total,
        "duplicate_replicas": dup_max,
        "not_converged": failures,
        "max_convergence_s": round(max(convergence), 2) if convergence else None,
        "median_convergence_s": round(statistics.median(convergence), 2) if convergence else None,
        "requests_acknowledged": len(set(run.expected) - acknowledged_before),
        "hit": hit,
        "calls_acknowledged": calls,
        **{name: counts[name] - evidence_before[name] for name in counts},
        "wall_s": round(time.monotonic() - began, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--fault", type=fault_list, default=["leader-kill"], metavar="FAULT[,FAULT...]|all",
        help=f"one or more of {', '.join(FAULTS)} (comma-separated), or all; run in turn in one world",
    )  # fmt: skip
    parser.add_argument("--iterations", type=int, default=10, help="iterations per fault")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--converge", type=float, default=60.0, help="give up on an iteration after this, s")
    args = parser.parse_args()
    if args.iterations < 1:
        parser.error(f"--iterations: expected at least 1, got {args.iterations}")
    rng = random.Random(args.seed)
    configure(fmt="json", level="warning")
    work = Path(tempfile.mkdtemp(prefix="tfc-"))
    fleet = work / "fleet.yaml"
    fleet.write_text("nodes:\n" + "".join(
        f"  - {{id: {n}, cluster: bench, region: r1, vendor: nvidia, model: H100, devices: 4, memory_gib: 80}}\n"
        for n in NODES
    ))  # fmt: skip
    tenants = work / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: bench, token: bench-token}\n")
    cluster = EtcdCluster(work / "etcd", 3)
    head = RayHead(work / "h", log_file=work / "head.log")
    executor = ExecutorProcess("bench", "", log_file=work / "executor.log", insecure_local_admin=True)
    agents: list[subprocess.Popen[bytes]] = []
    planes: dict[str, Plane] = {}
    relays: dict[str, Relay] = {}
    store: EtcdStore | None = None
    common = {"seed": args.seed, "instances": 3, "etcd_members": 3, "leader_ttl_s": LEADER_TTL_S}
    results: list[dict[str, Any]] = []
    failed = True
    try:
        await cluster.start()
        await asyncio.to_thread(head.start)
        executor.ray_address = head.address
        executor.spawn()
        await executor.wait_ready()
        store = EtcdStore(endpoints=[(m.host, m.client_port) for m in cluster.members], timeout_s=2.0)
        await store.connect()
        extra = ["--sim-start-delay", "1", "--reconcile-interval", "0.5"]
        planes = {n: Plane(n, work, cluster.endpoint, executor.address, tenants, extra) for n in "abc"}
        for plane in planes.values():
            plane.start()
        epoch = f"{time.time():.3f}"
        for node in NODES:
            relays[node] = Relay(planes["c"].address)
            agents.append(start_agent(node, work, fleet, await relays[node].start(), epoch, head.address))
        client = RemoteExecutor("bench", executor.address)
        deadline = time.monotonic() + 120
        while len([n for n in (await client.inventory()).nodes if n.alive and n.node_id]) < len(NODES):
            if time.monotonic() > deadline:
                raise SystemExit("raylets did not join")
            await asyncio.sleep(0.5)
        while not await registered_everywhere(planes, NODES):  # every instance has the nodes Ready
            if time.monotonic() > deadline:
                raise SystemExit("the nodes did not reach every instance")
            await asyncio.sleep(0.2)
        run = Run(World(cluster, store, planes, relays), client, work, rng, args.converge)
        for fault in args.fault:
            results.append(common | await run_fault(run, fault, args.iterations))
        await client.close()
        failed = False
    finally:
        for relay in relays.values():
            relay.silent = False
        stop_agents(agents)
        for relay in relays.values():
            await relay.stop()
        for plane in planes.values():
            if plane.proc is not None and plane.proc.poll() is None:
                os.kill(plane.proc.pid, signal.SIGCONT)
            plane.kill()
        if store is not None:
            await store.close()
        executor.stop()
        head.stop(5.0)
        cluster.stop()
        if failed:
            print(f"failed: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if len(args.fault) == 1:  # the single-fault object, as recorded in docs/benchmarks.md
        print(json.dumps(results[0], indent=2))
    else:
        print(json.dumps(common | {"iterations": args.iterations, "faults": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
