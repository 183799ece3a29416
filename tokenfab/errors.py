"""The root of Tokenfab's error tree and its retry semantics, shared by the control plane and agents.

Every typed error says whether trying again can help, by where it sits (after kopf's
``PermanentError`` / ``TemporaryError(delay=...)``)::

    TokenfabError            the root; ``message`` is what a caller is shown
    ├── PermanentError       retrying the same call cannot help (bad input, refused, fenced out)
    └── TemporaryError       retrying can help, after ``delay`` seconds (None: the loop's own pace)

:func:`retry_delay` is the one place a retrying loop asks "again, and when?": a temporary error
answers with its delay, a permanent one with None, and an untyped exception is judged by its kind
(an ``OSError`` or ``TimeoutError`` from a transport is temporary; anything else is a bug, and
retrying a bug cannot help). An RPC error (gRPC's ``AioRpcError``, recognised by its ``code()``)
is temporary when its status says the call may succeed later (UNAVAILABLE, DEADLINE_EXCEEDED,
ABORTED, RESOURCE_EXHAUSTED). Loops that must outlive even bugs still wait and go on, but they
tell the two apart in their logs.

:func:`retry_after` answers with the wait itself: the error's own delay when it carries one, else
the next step of the loop's :class:`Backoff` (jittered exponential), so a thousand loops that lost
the same etcd do not come back together.

The control plane's errors (:mod:`controlplane.errors`) and the agent's hang below these two
branches; this module imports nothing, so both sides may use it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "Backoff",
    "PermanentError",
    "TemporaryError",
    "TokenfabError",
    "is_temporary",
    "retry_after",
    "retry_delay",
]

# gRPC status codes (by name) after which the same call may succeed: the server was away or busy,
# the deadline passed, or a race was lost. Everything else is the caller's or the server's fault.
TEMPORARY_STATUS = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"})


class TokenfabError(Exception):
    """Base of every typed Tokenfab error. ``retryable`` follows from the branch it sits on."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class PermanentError(TokenfabError):
    """Retrying the same call cannot help: something must change first (input, state, role)."""

    retryable: ClassVar[bool] = False


class TemporaryError(TokenfabError):
    """Retrying can help. ``delay``: seconds to wait first (None: the retrying loop's own pace;
    0: at once, e.g. after re-reading what changed)."""

    retryable: ClassVar[bool] = True
    default_delay: ClassVar[float | None] = None

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = self.default_delay if delay is None else delay


def is_temporary(exc: BaseException) -> bool:
    """Whether retrying after ``exc`` can help (purely computational, no side-effects)."""
    if isinstance(exc, TokenfabError):
        return exc.retryable
    if isinstance(exc, OSError | TimeoutError):  # ConnectionError is an OSError
        return True
    return _rpc_status(exc) in TEMPORARY_STATUS


def _rpc_status(exc: BaseException) -> str | None:
    """The status name of an RPC error (``grpc.aio.AioRpcError.code().name``), else None."""
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        status = code()
    except Exception:  # not an RPC error's code(): an unrelated attribute
        return None
    name = getattr(status, "name", None)
    return name if isinstance(name, str) else None


def retry_delay(exc: BaseException, *, default: float) -> float | None:
    """Seconds to wait before retrying after ``exc``; None when retrying cannot help.

    ``default`` is the loop's own pace, used for a temporary error without a delay of its own and
    for transport errors (``OSError``, ``TimeoutError``). Purely computational, no side-effects.
    """
    if isinstance(exc, TemporaryError):
        return default if exc.delay is None else exc.delay
    if is_temporary(exc):
        return default
    return None


@dataclass
class Backoff:
    """Jittered exponential backoff ("equal jitter"): the n-th wait is ``d/2 + uniform(0, d/2)``
    with ``d = min(cap, base * 2**n)``, so loops that failed together spread their retries over the
    window instead of arriving together, and no wait is shorter than half the nominal delay.
    :meth:`reset` after a success."""

    base_s: float = 0.2
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        nominal = min(self.cap_s, self.base_s * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return nominal / 2 + self.rng.uniform(0, nominal / 2)

    def reset(self) -> None:
        self.attempt = 0


def retry_after(exc: BaseException, backoff: Backoff) -> float | None:
    """The wait before a retrying loop tries again after ``exc``: the error's own delay when it
    carries one (0 for a lost race: re-read at once), else ``backoff``'s next jittered step; None
    when retrying cannot help (the loop logs it as an error and goes on with its next item)."""
    if isinstance(exc, TemporaryError) and exc.delay is not None:
        return exc.delay
    if is_temporary(exc):
        return backoff.next_delay()
    return None
