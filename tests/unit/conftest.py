"""Unit tests are pure: starting a process here is a bug (use tests/integration for that)."""

from __future__ import annotations

import contextlib
import subprocess

import pytest


@pytest.fixture(scope="session", autouse=True)
def _matplotlib_font_cache() -> None:
    """Let matplotlib build its font cache before any guard is in place.

    On first use (a fresh machine or an empty HOME/MPLCONFIGDIR) matplotlib discovers fonts by running
    ``fc-list``. That process belongs to the test environment, not to the code under test, so it runs
    here, once per session, before ``_no_processes`` (function scope) refuses every process.
    """
    with contextlib.suppress(ImportError):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.font_manager  # the import builds (or loads) the cache


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unit tests must not start processes; move this test to tests/integration")

    monkeypatch.setattr(subprocess, "Popen", refuse)


class FakeClock:
    """Monotonic time that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
