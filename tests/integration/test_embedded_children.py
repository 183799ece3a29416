"""`tokenfab up` cleans up after a predecessor that was killed outright (kill -9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from controlplane.embedded.ray import reap_stale_children, remember_children


def sleeper(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", marker], start_new_session=True
    )


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
