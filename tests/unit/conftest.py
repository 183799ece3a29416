"""Unit tests are pure: starting a process here is a bug (use tests/integration for that)."""

from __future__ import annotations

import subprocess

import pytest


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
