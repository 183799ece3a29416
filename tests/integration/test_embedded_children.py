"""Children of `tokenfab up` never outlive it: the kernel ends them when `up` dies (kill -9
included), and a later `up` cleans up after a predecessor that was killed outright."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from controlplane.embedded.etcd import free_port
from controlplane.embedded.ray import ExecutorProcess, reap_stale_children, remember_children
from controlplane.embedded.up import ray_temp_root
from tests.integration.conftest import eventually


def sleeper(marker: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", marker], start_new_session=True
    )
    # Popen returns once exec has begun; the new command line shows in /proc a moment later
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    eventually(lambda: marker.encode() in cmdline.read_bytes(), timeout=10, what="the sleeper's command line")
    return proc


def test_stale_children_are_killed_only_when_their_marker_matches(tmp_path: Path) -> None:
    stale, innocent = sleeper(str(tmp_path / "head0")), sleeper("unrelated")
    try:
        remember_children(
            tmp_path, [(stale.pid, str(tmp_path / "head0")), (innocent.pid, str(tmp_path / "etcd"))]
        )
        assert reap_stale_children(tmp_path) == 1
        assert stale.wait(timeout=10) == -9
        assert innocent.poll() is None, "a process whose command line lacks the marker is left alone"
        assert not (tmp_path / "children.json").exists()
        assert reap_stale_children(tmp_path) == 0  # nothing recorded any more
    finally:
        for proc in (stale, innocent):
            proc.kill()
            proc.wait()


# -- kill -9 of `tokenfab up` itself ---------------------------------------------------------

ONE_NODE_FLEET = """\
nodes:
  - id: pdeath-h100-01
    cluster: pdeath
    region: test
    vendor: nvidia
    model: H100
    devices: 2
    memory_gib: 80
"""


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the command in parentheses


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie has ended; only its exit status waits for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` (by parent links), with its command line."""
    parents = {int(p.name): _ppid(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = _cmdline(child)
                frontier.append(child)
    return found


def with_marker(*markers: str) -> dict[int, str]:
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            cmd = _cmdline(int(p.name))
            if any(m in cmd for m in markers) and _alive(int(p.name)):
                out[int(p.name)] = cmd
    return out


def test_kill_9_of_up_ends_every_child(tmp_path: Path) -> None:
    """Real `tokenfab up` (etcd, a Ray head, an executor, an agent with its raylet), then kill -9:
    nothing may survive it, without a later `up` to reap them (PR_SET_PDEATHSIG)."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(ONE_NODE_FLEET)
    state = tmp_path / "state"
    ray_root = str(ray_temp_root(state))
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli.main", "up", "--headless", "--no-sample",
         "--address", f"127.0.0.1:{free_port()}", "--state-dir", str(state), "--fleet", str(fleet),
         "--metrics-address", f"127.0.0.1:{free_port()}", "--gateway-address", f"127.0.0.1:{free_port()}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    tree: dict[int, str] = {}
    try:
        wanted = {
            "etcd": lambda c: "etcd" in c and str(state / "etcd") in c,
            "executor": lambda c: " executor " in c,
            "agent": lambda c: " agent " in c,
            "ray head": lambda c: "gcs_server" in c,
            "raylet": lambda c: "raylet" in c and "pdeath-h100-01" in c,
        }
        missing = set(wanted)

        def all_started() -> bool:
            nonlocal tree, missing
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            tree = descendants(up.pid)
            missing = {name for name, match in wanted.items() if not any(match(c) for c in tree.values())}
            return not missing

        eventually(
            all_started, timeout=300, interval=0.5, what="every child of `up`",
            detail=lambda: f"never started: {missing}; tree: {sorted(tree.values())}",
        )  # fmt: skip
        up.kill()  # kill -9: no finally block, no signal handler runs in `up`
        up.wait()
        left: dict[int, str] = {}

        def none_left() -> bool:
            nonlocal left
            left = {pid: cmd for pid, cmd in tree.items() if _alive(pid)} | with_marker(str(state), ray_root)
            return not left

        eventually(none_left, timeout=60, interval=0.5, what="no child outliving `up`", detail=lambda: left)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in [*tree, *with_marker(str(state), ray_root)]:  # never leak into other tests
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        log.close()


def test_an_executor_stops_at_once_while_ray_is_unreachable(tmp_path: Path) -> None:
    """SIGTERM while ``ray.init`` is still trying to reach its cluster (nothing listens there):
    the executor stops without waiting for it. ``ray.init`` retries for a minute and cannot be
    interrupted, and it used to hold up every stop (`up` killed early, the tests) until then."""
    executor = ExecutorProcess(
        "nowhere", f"127.0.0.1:{free_port()}", log_file=tmp_path / "executor.log", insecure_local_admin=True
    )
    executor.spawn()
    assert executor.proc is not None
    try:
        eventually(
            lambda: '"executor.connecting"' in executor.log_file.read_text(), timeout=60, interval=0.2,
            what="the executor connecting to Ray",
        )  # fmt: skip
        executor.proc.send_signal(signal.SIGTERM)
        assert executor.proc.wait(timeout=30) == 0  # a guard: Ray alone keeps trying for 60 s
    finally:
        executor.stop()
    log = executor.log_file.read_text()
    assert '"connected": false' in log and '"executor.stopped"' in log, log[-2000:]
