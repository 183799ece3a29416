"""The root of Tokenfab's error tree and its retry semantics, shared by the control plane and agents.

Every typed error says whether trying again can help, by where it sits (after kopf's
``PermanentError`` / ``TemporaryError(delay=...)``)::

    TokenfabError            the root; ``message`` is what a caller is shown
    ├── PermanentError       retrying the same call cannot help (bad input, refused, fenced out)
    └── TemporaryError       retrying can help, after ``delay`` seconds (None: the loop's own pace)

:func:`retry_delay` is the one place a retrying loop asks "again, and when?": a temporary error
answers with its delay, a permanent one with None, and an untyped exception is judged by its kind
(an ``OSError`` or ``TimeoutError`` from a transport is temporary; anything else is a bug, and
retrying a bug cannot help). Loops that must outlive even bugs still wait and go on, but they tell
the two apart in their logs.

The control plane's errors (:mod:`controlplane.errors`) and the agent's hang below these two
branches; this module imports nothing, so both sides may use it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["PermanentError", "TemporaryError", "TokenfabError", "is_temporary", "retry_delay"]


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
    return isinstance(exc, OSError | TimeoutError)  # ConnectionError is an OSError


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
