"""The one interceptor chain every Tokenfab gRPC server runs: authenticate, authorise, limit,
audit, and map typed errors to status codes.

For each call, before the handler runs:

1. **authenticate** (:mod:`controlplane.security.authn`): bad credentials -> UNAUTHENTICATED;
2. **authorise** against :data:`controlplane.security.policy.POLICY`: a method without an entry,
   or a principal without the access it needs -> PERMISSION_DENIED naming the principal and the
   method; a node naming another node in the rule's ``node_field`` -> PERMISSION_DENIED;
3. **limit**: open streams per principal (watches, agent streams) -> RESOURCE_EXHAUSTED over it;
4. run the handler with the principal in a context variable (:func:`current_principal`);
5. **map errors**: a typed error the handler raises becomes its status code (``errors``);
6. **audit**: mutating calls and every refusal -> the audit sink; refusals -> Prometheus.

Handlers therefore contain no credential code and no try/except/abort block.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, cast

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
from controlplane.security.audit import AuditEntry, now
from controlplane.security.authn import Authenticator
from controlplane.security.policy import POLICY, Access, Rule, allowed, needs, short
from controlplane.security.principals import Kind, Principal
from tokenfab.logs import get_logger

log = get_logger("security")

_CURRENT: ContextVar[Principal | None] = ContextVar("tokenfab_principal", default=None)
AUDITED_REFUSALS = 20  # per caller and window; the rest are counted and logged only
REFUSAL_WINDOW_S = 10.0

ErrorMap = Callable[[Exception], "tuple[grpc.StatusCode, str] | None"]
AuditSink = Callable[[AuditEntry], Awaitable[None]]

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Conflict, grpc.StatusCode.ABORTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
]


def typed_errors(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status of a :class:`TokenfabError`; None for anything else (re-raised: INTERNAL)."""
    if isinstance(exc, TokenfabError):
        code = next((c for kind, c in _CODES if isinstance(exc, kind)), grpc.StatusCode.INTERNAL)
        return code, exc.message
    return None


def current_principal() -> Principal:
    """The caller of the RPC being handled; PermissionDenied outside an intercepted call."""
    principal = _CURRENT.get()
    if principal is None:
        raise PermissionDenied("no authenticated principal for this call")
    return principal


def check_node(node_id: str, *, field: str = "node_id") -> None:
    """A node agent may only act as the node in its certificate (others pass: policy decided)."""
    principal = current_principal()
    if principal.kind is Kind.NODE and node_id != principal.name:
        raise PermissionDenied(
            f"{field}: {principal} may only act as node {principal.name!r}, not {node_id[:80]!r}"
        )


def _field(message: Any, path: str) -> str:
    value = message
    for part in path.split("."):
        value = getattr(value, part, "")
    return str(value)[:200]


class Limits:
    """Open streams per principal; the local principal (one name for every loopback caller) is
    not limited."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._open: dict[str, int] = {}

    def acquire(self, principal: Principal | None, method: str) -> str | None:
        if principal is None or principal.kind is Kind.LOCAL:
            return None
        key = principal.key
        if self._open.get(key, 0) >= self.max_streams:
            raise QuotaExceeded(
                f"{principal}: at most {self.max_streams} open streams per principal ({short(method)})"
            )
        self._open[key] = self._open.get(key, 0) + 1
        return key

    def release(self, key: str | None) -> None:
        if key is not None:
            left = self._open.get(key, 1) - 1
            if left:
                self._open[key] = left
            else:
                self._open.pop(key, None)


class SecurityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        policy: dict[str, Rule] | None = None,
        errors: ErrorMap = typed_errors,
        audit: AuditSink | None = None,
        metrics: Any = None,
        max_streams_per_principal: int = 32,
    ) -> None:
        self._authn = authenticator
        self._policy = POLICY if policy is None else policy
        self._errors = errors
        self._audit = audit
        self._metrics = metrics
        self.limits = Limits(max_streams_per_principal)
        self._refusals: dict[str, tuple[float, int]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # grpc answers UNIMPLEMENTED
        method: str = handler_call_details.method
        return self._wrap(handler, method, self._policy.get(method))

    # -- the checks ---------------------------------------------------------------------------

    async def _admit(
        self, method: str, entry: Rule | None, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Principal | None:
        """The caller, or an abort with UNAUTHENTICATED / PERMISSION_DENIED."""
        try:
            principal = self._authn.authenticate(
                list(context.invocation_metadata() or ()),
                {k: list(v) for k, v in context.auth_context().items()},
                context.peer(),
            )
        except Unauthenticated as exc:
            if entry is not None and Access.PUBLIC in entry.allow:
                return None  # a public method (health) answers whatever the credentials say
            await self._refuse(context, method, None, grpc.StatusCode.UNAUTHENTICATED,
                               f"{short(method)}: {exc.message}", request, entry)  # fmt: skip
            raise AssertionError("unreachable") from None
        if entry is None:
            await self._refuse(context, method, principal, grpc.StatusCode.PERMISSION_DENIED,
                               f"{short(method)} has no authorization policy: denied to everyone",
                               request, entry)  # fmt: skip
        assert entry is not None
        if not allowed(entry, principal):
            if principal is None or principal.kind is Kind.CLIENT:  # a transport certificate only
                await self._refuse(context, method, principal, grpc.StatusCode.UNAUTHENTICATED,
                                   f"{short(method)} needs credentials ({needs(entry)}): a bearer token "
                                   "or a workload certificate", request, entry)  # fmt: skip
            await self._refuse(context, method, principal, grpc.StatusCode.PERMISSION_DENIED,
                               f"{principal} may not call {short(method)} (needs {needs(entry)})",
                               request, entry)  # fmt: skip
        if entry.node_field and principal is not None and principal.kind is Kind.NODE and request is not None:
            named = _field(request, entry.node_field)
            if named != principal.name:
                await self._refuse(context, method, principal, grpc.StatusCode.PERMISSION_DENIED,
                                   f"{principal} may not call {short(method)} for node {named!r}: "
                                   "an agent acts only as its own node", request, entry)  # fmt: skip
        return principal

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        principal: Principal | None,
        code: grpc.StatusCode,
        message: str,
        request: Any,
        entry: Rule | None,
    ) -> None:
        if self._metrics is not None:
            if code is grpc.StatusCode.UNAUTHENTICATED:
                self._metrics.authn_failures.labels(method=short(method)).inc()
            else:
                kind = principal.kind.value if principal is not None else "anonymous"
                self._metrics.authz_denials.labels(method=short(method), kind=kind).inc()
        if self._refusals_to_audit(principal, context):
            await self._record(method, principal, entry, request, code.name, message, context)
        await context.abort(code, message)

    def _refusals_to_audit(
        self, principal: Principal | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bool:
        """At most ``AUDITED_REFUSALS`` refusals per caller per ``REFUSAL_WINDOW_S`` reach etcd (a
        caller hammering a denied method must not turn each try into an etcd write); the rest are
        counted in Prometheus and logged only."""
        key = principal.key if principal is not None else context.peer().rpartition(":")[0]
        now = time.monotonic()
        start, count = self._refusals.get(key, (now, 0))
        if now - start > REFUSAL_WINDOW_S:
            start, count = now, 0
        self._refusals[key] = (start, count + 1)
        if len(self._refusals) > 10_000:  # forget the quiet ones
            self._refusals = {k: v for k, v in self._refusals.items() if now - v[0] <= REFUSAL_WINDOW_S}
        if count < AUDITED_REFUSALS:
            return True
        log.info("audit.refusal_suppressed", principal=key)
        return False

    async def _record(
        self,
        method: str,
        principal: Principal | None,
        entry: Rule | None,
        request: Any,
        result: str,
        reason: str,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        if self._audit is None:
            return
        target = (
            _field(request, entry.target)
            if entry is not None and entry.target and request is not None
            else ""
        )
        await self._audit(
            AuditEntry(
                at=now(), principal=str(principal) if principal is not None else "anonymous",
                method=short(method), target=target, result=result, reason=reason, peer=context.peer(),
            )
        )  # fmt: skip

    async def _failed(
        self, exc: Exception, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[grpc.StatusCode, str]:
        """The status for a handler's typed error (re-raised when it has none: INTERNAL). A
        scoping refusal inside a handler (a node naming another node) counts as a denial."""
        mapped = self._errors(exc)
        if mapped is None and isinstance(exc, NotImplementedError):  # e.g. grpc's Health/List stub
            mapped = (grpc.StatusCode.UNIMPLEMENTED, "not implemented by this server")
        if mapped is None:
            raise exc
        if mapped[0] is grpc.StatusCode.PERMISSION_DENIED and self._metrics is not None:
            principal = _CURRENT.get()
            kind = principal.kind.value if principal is not None else "anonymous"
            self._metrics.authz_denials.labels(method="handler", kind=kind).inc()
        return mapped

    # -- wrapping the four handler shapes --------------------------------------------------------

    def _wrap(self, handler: Any, method: str, entry: Rule | None) -> Any:
        audited = entry is not None and entry.mutates
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                principal = await self._admit(method, entry, request, context)
                token = _CURRENT.set(principal)
                try:
                    response = await inner(request, context)
                except Exception as exc:
                    code, message = await self._failed(exc, context)
                    if audited:
                        await self._record(method, principal, entry, request, code.name, message, context)
                    await context.abort(code, message)
                finally:
                    _CURRENT.reset(token)
                if audited:
                    await self._record(method, principal, entry, request, "OK", "", context)
                return response

            return grpc.unary_unary_rpc_method_handler(
                cast(Any, unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, entry, with_request=True),
                handler.request_deserializer, handler.response_serializer,
            )  # fmt: skip
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                principal = await self._admit(method, entry, None, context)
                token = _CURRENT.set(principal)
                try:
                    return await inner_su(requests, context)
                except Exception as exc:
                    code, message = await self._failed(exc, context)
                    await context.abort(code, message)
                finally:
                    _CURRENT.reset(token)

            return grpc.stream_unary_rpc_method_handler(
                cast(Any, stream_unary), handler.request_deserializer, handler.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method, entry, with_request=False),
            handler.request_deserializer, handler.response_serializer,
        )  # fmt: skip

    def _stream(self, inner: Any, method: str, entry: Rule | None, *, with_request: bool) -> Any:
        """A streaming behaviour in the same style as ``inner`` (grpc.aio refuses mixing an async
        generator with ``context.write``)."""

        async def enter(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, str | None]:
            principal = await self._admit(method, entry, request if with_request else None, context)
            try:
                slot = self.limits.acquire(principal, method)
            except QuotaExceeded as exc:
                await self._refuse(context, method, principal, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   exc.message, request, entry)  # fmt: skip
            return _CURRENT.set(principal), slot

        if inspect.isasyncgenfunction(inner):

            async def generator(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                token, slot = await enter(request, context)
                try:
                    async for item in inner(request, context):
                        yield item
                except Exception as exc:
                    code, message = await self._failed(exc, context)
                    await context.abort(code, message)
                finally:
                    self.limits.release(slot)
                    with contextlib.suppress(ValueError):
                        _CURRENT.reset(token)

            return generator

        async def coroutine(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token, slot = await enter(request, context)
            try:
                return await inner(request, context)
            except Exception as exc:
                code, message = await self._failed(exc, context)
                await context.abort(code, message)
            finally:
                self.limits.release(slot)
                _CURRENT.reset(token)

        return coroutine
