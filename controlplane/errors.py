"""Typed errors of the control plane, each saying whether a retry can help.

::

    TokenfabError                 retryable = False unless stated
    ├── InvalidArgument           bad input; ``field`` names it      -> INVALID_ARGUMENT
    ├── NotFound                  no such object                     -> NOT_FOUND
    ├── FailedPrecondition        valid, but not in this state       -> FAILED_PRECONDITION
    ├── Conflict                  lost a compare-and-swap race       -> ABORTED (retryable)
    ├── Unauthenticated           no or unknown credentials          -> UNAUTHENTICATED
    ├── PermissionDenied          authenticated, not allowed         -> PERMISSION_DENIED
    └── QuotaExceeded             over a tenant's quota              -> RESOURCE_EXHAUSTED

The API layer maps them to gRPC status codes; nothing below the API layer knows about gRPC.
"""

from __future__ import annotations


class TokenfabError(Exception):
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TokenfabError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(TokenfabError):
    pass


class FailedPrecondition(TokenfabError):
    pass


class Conflict(TokenfabError):
    retryable = True


class Unauthenticated(TokenfabError):
    pass


class PermissionDenied(TokenfabError):
    pass


class QuotaExceeded(TokenfabError):
    pass
