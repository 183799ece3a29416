"""Typed errors of the control plane, each saying by its place in the tree whether a retry can help.

::

    TokenfabError (tokenfab.errors)      the root; ``message`` is what a caller is shown
    ├── PermanentError                   retrying the same call cannot help
    │   ├── InvalidArgument              bad input; ``field`` names it     -> INVALID_ARGUMENT
    │   ├── NotFound                     no such object                    -> NOT_FOUND
    │   ├── FailedPrecondition           valid, but not in this state      -> FAILED_PRECONDITION
    │   ├── Unauthenticated              no or unknown credentials         -> UNAUTHENTICATED
    │   ├── PermissionDenied             authenticated, not allowed        -> PERMISSION_DENIED
    │   ├── QuotaExceeded                over a tenant's quota             -> RESOURCE_EXHAUSTED
    │   ├── Fenced                       store: the writer lost its fence (leadership)
    │   └── LeaseExpired                 store: the lease is gone, and what it held
    └── TemporaryError(delay=...)        retrying can help, after ``delay`` (None: the loop's pace)
        ├── Conflict          delay 0    lost a compare-and-swap race: re-read, decide again -> ABORTED
        ├── StoreUnavailable             store: etcd unreachable or the call broke     -> UNAVAILABLE
        └── RevisionCompacted delay 0    store: the watch's history is gone: list again, watch on

A retrying loop asks :func:`retry_delay` or :func:`retry_after` (the wait itself, with the
jittered :class:`Backoff`; all three from :mod:`tokenfab.errors`) rather than naming classes:
``controlplane.store.follow`` (the resumable watch), the leader election, the reconcile loop
(``controlplane.reconcile.loop``: a temporary failure backs off, a permanent one is logged as an
error and the next pass runs) and the agent's reconnect loop do. The store errors are defined
here and re-exported by :mod:`controlplane.store.base`, where they have always been imported
from. The API layer maps the tree to gRPC status codes (``controlplane.api.status``); nothing below
the API layer knows gRPC.
Every other exception the project defines hangs from the same two branches, keeping the base
classes its callers catch (``tests/unit/test_errors.py`` walks every module to hold that): bad
files and launches are permanent and still ``ValueError`` (catalog, engine, token-file, TLS,
fleet-file, notice errors), illegal node and replica transitions are ``FailedPrecondition``, the
agent's :class:`agents.runtime.AgentConfigError` is permanent, its ack timeout temporary and still
a ``ConnectionError``, a discovery tool's failure temporary.
"""

from __future__ import annotations

from typing import ClassVar

from tokenfab.errors import (
    Backoff,
    PermanentError,
    TemporaryError,
    TokenfabError,
    is_temporary,
    retry_after,
    retry_delay,
)

__all__ = [
    "Backoff",
    "Conflict",
    "FailedPrecondition",
    "Fenced",
    "InvalidArgument",
    "LeaseExpired",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "QuotaExceeded",
    "RevisionCompacted",
    "StoreUnavailable",
    "TemporaryError",
    "TokenfabError",
    "Unauthenticated",
    "is_temporary",
    "retry_after",
    "retry_delay",
]


class InvalidArgument(PermanentError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(PermanentError):
    pass


class FailedPrecondition(PermanentError):
    pass


class Unauthenticated(PermanentError):
    pass


class PermissionDenied(PermanentError):
    pass


class QuotaExceeded(PermanentError):
    pass


class Conflict(TemporaryError):
    """Lost a compare-and-swap race: re-read and decide again, at once."""

    default_delay: ClassVar[float | None] = 0.0


class StoreUnavailable(TemporaryError):
    """The backing store could not be reached; the operation may be retried."""


class RevisionCompacted(TemporaryError):
    """A watch asked for history the store has compacted; list again, then watch from there."""

    default_delay: ClassVar[float | None] = 0.0

    def __init__(self, compacted_revision: int) -> None:
        super().__init__(f"revision compacted: history before {compacted_revision} is gone")
        self.compacted_revision = compacted_revision


class Fenced(PermanentError):
    """A fenced write found the fence gone: the writer no longer holds what entitled it to write
    (leadership). Not retryable by the same writer; nothing was written."""


class LeaseExpired(PermanentError):
    """A lease to refresh no longer exists (it expired or was revoked): what it held is gone."""
