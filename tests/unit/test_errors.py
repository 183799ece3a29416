"""The error tree is what controlplane/errors.py draws, and the retrying loops take their decisions
from it (the resumable watch, the leader election, the agent's reconnect loop)."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

import controlplane.errors as errors
import tokenfab.errors as kernel
from agents.backoff import Backoff
from agents.discovery.simulated import SimulatedBackend, load_fleet
from agents.runtime import Agent, AgentConfigError, NodeIdentity
from controlplane.ha.election import Election
from controlplane.store import base, follow
from controlplane.store.base import WatchEvent


def _drawn_tree() -> list[tuple[str, str]]:
    """(class, parent) for every node of the tree in the module docstring."""
    assert errors.__doc__ is not None
    edges: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z]\w+)", line)
        if match is None or ("──" not in line and not line.strip().startswith("TokenfabError")):
            continue
        depth = line.index(match.group(2))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            edges.append((match.group(2), stack[-1][1]))
        stack.append((depth, match.group(2)))
    return edges


def test_the_tree_is_what_the_docstring_draws() -> None:
    edges = _drawn_tree()
    drawn = {name for edge in edges for name in edge}
    assert len(edges) == 13  # two branches, six refusals, two fenced-out store errors, three temporary
    for name, parent in edges:
        cls, parent_cls = getattr(errors, name), getattr(errors, parent)
        assert cls.__bases__ == (parent_cls,), f"{name} is drawn under {parent}"
    # every exception class the module defines is drawn
    defined = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert defined == drawn
    assert set(errors.__all__) >= defined


def test_the_root_and_branches_are_the_kernels() -> None:
    assert errors.TokenfabError is kernel.TokenfabError
    assert errors.PermanentError is kernel.PermanentError
    assert errors.TemporaryError is kernel.TemporaryError
    assert issubclass(AgentConfigError, kernel.PermanentError)


def test_store_errors_are_still_importable_from_the_store() -> None:
    assert base.StoreUnavailable is errors.StoreUnavailable
    assert base.Fenced is errors.Fenced
    assert base.RevisionCompacted is errors.RevisionCompacted
    assert base.LeaseExpired is errors.LeaseExpired
    from controlplane.store import StoreUnavailable

    assert StoreUnavailable is errors.StoreUnavailable


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (errors.StoreUnavailable("etcd away"), True),
        (errors.Conflict("lost"), True),
        (errors.RevisionCompacted(7), True),
        (errors.Fenced("not the leader"), False),
        (errors.LeaseExpired("gone"), False),
        (errors.InvalidArgument("model", "unknown"), False),
        (errors.NotFound("x"), False),
        (errors.PermissionDenied("x"), False),
    ],
)
def test_retryable_follows_the_branch(exc: errors.TokenfabError, retryable: bool) -> None:
    assert exc.retryable is retryable
    assert errors.is_temporary(exc) is retryable


def test_retry_delay() -> None:
    assert errors.retry_delay(errors.StoreUnavailable("x"), default=1.5) == 1.5  # the loop's pace
    assert errors.retry_delay(errors.StoreUnavailable("x", delay=4.0), default=1.5) == 4.0
    assert errors.retry_delay(errors.Conflict("x"), default=1.5) == 0.0  # re-read at once
    assert errors.retry_delay(errors.RevisionCompacted(3), default=1.5) == 0.0
    assert errors.retry_delay(errors.Fenced("x"), default=1.5) is None
    assert errors.retry_delay(errors.InvalidArgument("f", "bad"), default=1.5) is None
    assert errors.retry_delay(ConnectionResetError(), default=1.5) == 1.5  # transports: temporary
    assert errors.retry_delay(TimeoutError(), default=1.5) == 1.5
    assert errors.retry_delay(KeyError("bug"), default=1.5) is None  # a bug: a retry cannot fix it


def test_messages_and_fields_are_kept() -> None:
    exc = errors.InvalidArgument("spec.model", "unknown model")
    assert exc.message == str(exc) == "spec.model: unknown model"
    assert exc.field == "spec.model"
    compacted = errors.RevisionCompacted(12)
    assert compacted.compacted_revision == 12
    assert str(compacted) == compacted.message


class _FailingStore:
    """list_prefix raises the given errors in turn, then cancels the follower."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures

    async def list_prefix(self, prefix: str) -> tuple[list[Any], int]:
        if not self.failures:
            raise asyncio.CancelledError
        raise self.failures.pop(0)

    def watch_prefix(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        raise AssertionError("never reached")


async def test_follow_takes_its_retry_decision_from_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "RETRY_S", 0.0)
    store = _FailingStore([errors.StoreUnavailable("etcd away"), KeyError("a bug")])
    with capture_logs() as logs, pytest.raises(asyncio.CancelledError):
        await follow.follow(store, "/p/", lambda event: None, what="test")  # type: ignore[arg-type]
    failed = [(e["log_level"], e["retryable"], e["error"]) for e in logs if e["event"] == "follow.failed"]
    assert failed == [("warning", True, "etcd away"), ("error", False, "'a bug'")]


class _ElectionStore:
    """grant_lease raises the given errors in turn; then stops the election."""

    def __init__(self, failures: list[Exception], stopped: asyncio.Event) -> None:
        self.failures, self.stopped = failures, stopped

    async def grant_lease(self, ttl_s: int) -> int:
        if len(self.failures) == 1:
            self.stopped.set()
        raise self.failures.pop(0)


async def test_election_logs_only_what_a_retry_cannot_fix() -> None:
    stopped = asyncio.Event()
    store = _ElectionStore([errors.StoreUnavailable("etcd away"), OSError("reset"), KeyError("bug")], stopped)
    election = Election(store, "me", ttl_s=1)  # type: ignore[arg-type]
    with capture_logs() as logs:
        await election.start()
        await asyncio.wait_for(stopped.wait(), 10)
        await election.stop()
    errors_logged = [e["error"] for e in logs if e["event"] == "election.error"]
    assert errors_logged == ["KeyError('bug')"]


class _Agent(Agent):
    """An agent whose sessions fail with the given errors in turn (no network)."""

    failures: list[Exception]

    async def _session(self, stop: asyncio.Event) -> None:
        self.status.sessions += 1
        raise self.failures.pop(0)


async def test_agent_reconnects_after_temporary_errors_and_stops_on_permanent_ones() -> None:
    sim = load_fleet(None)[0]
    agent = _Agent(
        SimulatedBackend(sim), NodeIdentity("n1", "c1"), address="127.0.0.1:1", backoff=Backoff(0.0, 0.0)
    )
    agent.failures = [
        ConnectionResetError("reset"), kernel.TemporaryError("later"), KeyError("bug"), AgentConfigError("bad")
    ]  # fmt: skip
    with capture_logs() as logs, pytest.raises(AgentConfigError):
        await agent.run(asyncio.Event())
    assert agent.status.sessions == 4  # a bug is logged as one, and the agent still reconnects
    assert agent.failures == []
    ended = [(e["log_level"], e["retryable"]) for e in logs if e["event"] == "agent.session_ended"]
    assert ended == [("warning", True), ("warning", True), ("error", False)]


class _RpcError(Exception):
    """Shaped like grpc.aio.AioRpcError: the status by code()."""

    def __init__(self, code: Any) -> None:
        super().__init__(code.name)
        self._code = code

    def code(self) -> Any:
        return self._code


@pytest.mark.parametrize(
    ("name", "temporary"),
    [("UNAVAILABLE", True), ("DEADLINE_EXCEEDED", True), ("ABORTED", True), ("RESOURCE_EXHAUSTED", True),
     ("INVALID_ARGUMENT", False), ("INTERNAL", False), ("PERMISSION_DENIED", False)],
)  # fmt: skip
def test_an_rpc_error_is_judged_by_its_status(name: str, temporary: bool) -> None:
    import grpc

    exc = _RpcError(getattr(grpc.StatusCode, name))
    assert errors.is_temporary(exc) is temporary
    assert (errors.retry_delay(exc, default=1.0) == 1.0) is temporary


def test_retry_after_takes_the_errors_delay_else_the_backoffs_next_step() -> None:
    backoff = kernel.Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(3))
    assert kernel.retry_after(errors.Conflict("lost"), backoff) == 0.0  # its own delay: no backoff step
    assert kernel.retry_after(errors.StoreUnavailable("away", delay=7.0), backoff) == 7.0
    assert backoff.attempt == 0
    waits = [kernel.retry_after(errors.StoreUnavailable("away"), backoff) for _ in range(5)]
    assert [w is not None and n / 2 <= w <= n for w, n in zip(waits, [1, 2, 4, 8, 8], strict=True)] == [
        True
    ] * 5
    assert kernel.retry_after(KeyError("bug"), backoff) is None
    assert kernel.retry_after(errors.Fenced("not the leader"), backoff) is None
    assert Backoff is kernel.Backoff  # the agent's import is the kernel's helper


def _project_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined at module level in the project's packages (the generated
    tokenfab.v1 stubs aside), by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for package in ("tokenfab", "controlplane", "agents"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.startswith("tokenfab.v1") or info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, BaseException)
                    and value.__module__ == info.name
                ):
                    found[f"{info.name}.{value.__qualname__}"] = value
    return found


PROJECT_EXCEPTIONS = _project_exceptions()


@pytest.mark.parametrize("name", sorted(PROJECT_EXCEPTIONS))
def test_every_project_exception_is_in_the_tree(name: str) -> None:
    cls = PROJECT_EXCEPTIONS[name]
    assert issubclass(cls, kernel.TokenfabError), f"{name} is outside the error tree"
    assert cls in (kernel.TokenfabError,) or issubclass(cls, kernel.PermanentError | kernel.TemporaryError), (
        f"{name} hangs from the root, not from a branch"
    )


def test_the_walk_found_the_known_exceptions() -> None:
    assert len(PROJECT_EXCEPTIONS) >= 30
    assert "controlplane.fleet.states.IllegalTransition" in PROJECT_EXCEPTIONS
    assert "agents.runtime.AckTimeout" in PROJECT_EXCEPTIONS
    assert "controlplane.gateway.admission.RateLimited" in PROJECT_EXCEPTIONS


def test_the_moved_exceptions_keep_what_callers_catch() -> None:
    from agents.discovery.base import NotPresent, ToolFailed
    from agents.runtime import AckTimeout
    from controlplane.catalog.types import CatalogError
    from controlplane.domain.replicas import IllegalReplicaTransition
    from controlplane.executor.engines import EngineError
    from controlplane.fleet.states import IllegalTransition
    from controlplane.security.tokens import TokenFileError
    from tokenfab.tls import TLSConfigError

    timeout = AckTimeout("no ack in 3 s")
    assert (
        isinstance(timeout, ConnectionError)
        and errors.is_temporary(timeout)
        and str(timeout) == "no ack in 3 s"
    )
    assert errors.is_temporary(ToolFailed("nvidia-smi exited 9")) and not errors.is_temporary(NotPresent("x"))
    for cls in (CatalogError, EngineError, TokenFileError, TLSConfigError):
        exc = cls("model.size: not a number")
        assert isinstance(exc, ValueError) and exc.message == str(exc) == "model.size: not a number"
        assert errors.retry_delay(exc, default=1.0) is None
    assert issubclass(IllegalTransition, errors.FailedPrecondition)
    assert issubclass(IllegalReplicaTransition, errors.FailedPrecondition)


def test_the_gateway_simulator_and_ray_errors_keep_their_contracts() -> None:
    from controlplane.embedded.ray import RayError
    from controlplane.gateway.admission import NoReplica, RateLimited
    from controlplane.gateway.proxy import UpstreamFailed, UpstreamRejected
    from controlplane.simulate.trace import TraceError

    limited = RateLimited("over the reservation", retry_after_s=2.2)
    assert limited.retry_after_s == 3 and str(limited) == "over the reservation"  # whole seconds, up
    assert errors.retry_delay(limited, default=0.5) == 3.0  # the Retry-After is its retry delay
    assert RateLimited("x", retry_after_s=0.01).retry_after_s == 1
    assert errors.is_temporary(NoReplica("no Ready replica after 30 s"))
    failed = UpstreamFailed("every replica failed", status=503)
    assert failed.status == 503 and errors.retry_delay(failed, default=0.5) == 0.5
    rejected = UpstreamRejected(400, b'{"error": "bad"}')
    assert (rejected.status, rejected.body) == (400, b'{"error": "bad"}') and not errors.is_temporary(
        rejected
    )
    trace = TraceError("t.csv:3: GeneratedTokens is empty")
    assert isinstance(trace, ValueError) and trace.message == "t.csv:3: GeneratedTokens is empty"
    assert isinstance(RayError("ray head exited with 1"), RuntimeError)
    assert not errors.is_temporary(RayError("ray head exited with 1"))
