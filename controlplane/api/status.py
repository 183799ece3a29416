"""Typed control-plane errors -> gRPC status codes (used as the gRPC docs intend)."""

from __future__ import annotations

import grpc

from controlplane.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    TokenfabError,
    Unauthenticated,
)
from controlplane.fleet.states import IllegalTransition
from controlplane.store.base import StoreUnavailable

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (IllegalTransition, grpc.StatusCode.FAILED_PRECONDITION),
    (Conflict, grpc.StatusCode.ABORTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
]


def code_for(exc: Exception) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def message_for(exc: Exception) -> str:
    if isinstance(exc, TokenfabError):
        return exc.message
    if isinstance(exc, StoreUnavailable | IllegalTransition):
        return str(exc)
    return "internal error"


HANDLED = (TokenfabError, IllegalTransition, StoreUnavailable)


def map_error(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The interceptor chain's error map for the control plane; None: not ours (INTERNAL)."""
    if isinstance(exc, HANDLED):
        return code_for(exc), message_for(exc)
    return None
