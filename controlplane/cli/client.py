"""Client helpers for CLI commands that talk to a running control plane.

Credentials, most specific first:

* TLS: ``--tls-ca/--tls-cert/--tls-key`` (or ``TOKENFAB_TLS_*``); otherwise, when ``--address`` is
  the one ``tokenfab up`` serves (``<state dir>/endpoint``), the state dir's CA and CLI certificate.
* Bearer token: ``--token`` / ``TOKENFAB_TOKEN``; otherwise, for that same address, the state
  dir's ``admin-token`` (operator commands) or ``demo-token`` (``tokenfab request``).

So the demo needs no flags, and a CLI pointed at another control plane never sends it the demo's
credentials.

Every command that talks to a control plane goes through the same two pieces:

* :func:`tls_options`, the one TLS option group: a command declares ``tls: TLSFlags`` and the
  decorator gives it ``--tls-ca/--tls-cert/--tls-key/--tls-server-name`` (same names, variables,
  help and place as each command always had), handed over as one :class:`TLSFlags`.
* :class:`Client`, the one client helper: address, TLS material, bearer token, and
  :func:`rpc_failure`, which maps a gRPC status to ``error: CODE: details`` and an exit code.

Exit codes: 1 bad options or no credentials (:data:`EXIT_USAGE`), 2 the control plane refused the
call (:data:`EXIT_REFUSED`), 3 it could not be reached (:data:`EXIT_UNREACHABLE`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import grpc
import typer

if TYPE_CHECKING:  # imported where used: every CLI process (and every agent) loads this module
    from tokenfab.tls import ClientTLS

DEFAULT_ADDRESS = "127.0.0.1:50051"
EXIT_USAGE = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
R = TypeVar("R")
__all__ = [
    "DEFAULT_ADDRESS",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "NO_TLS_FLAGS",
    "AddressOpt",
    "Client",
    "TLSFlags",
    "TokenOpt",
    "bearer",
    "channel",
    "client_tls",
    "fail",
    "rpc_failure",
    "state_dir",
    "state_token",
    "tls_options",
]

AddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="TOKENFAB_ADDRESS",
        help="control plane host:port (agents: several, comma-separated)",
    ),
]
CaOpt = Annotated[
    Path | None, typer.Option("--tls-ca", envvar="TOKENFAB_TLS_CA", help="CA that signed the server")
]
CertOpt = Annotated[
    Path | None, typer.Option("--tls-cert", envvar="TOKENFAB_TLS_CERT", help="client certificate")
]
KeyOpt = Annotated[Path | None, typer.Option("--tls-key", envvar="TOKENFAB_TLS_KEY", help="client key")]
NameOpt = Annotated[
    str | None,
    typer.Option("--tls-server-name", envvar="TOKENFAB_TLS_SERVER_NAME", help="expected server name"),
]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="TOKENFAB_TOKEN", help="bearer token")]


def state_dir() -> Path:
    return Path(os.environ.get("TOKENFAB_STATE_DIR") or Path.cwd() / ".tokenfab")


def _up_state(address: str | None) -> Path | None:
    """The state dir when ``address`` is the control plane ``tokenfab up`` runs there."""
    state = state_dir()
    endpoint = state / "endpoint"
    try:
        served = endpoint.read_text().strip()
    except OSError:
        return None
    return state if address is None or address == served else None


def client_tls(
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
    address: str | None = None,
) -> ClientTLS | None:
    from tokenfab.tls import ClientTLS

    if ca is None:
        if cert is not None or key is not None:
            raise ValueError("--tls-cert/--tls-key need --tls-ca (the CA that signed the control plane)")
        state = _up_state(address) if address is not None else None
        if state is not None and (state / "pki" / "ca.crt").exists():
            pki = state / "pki"
            return ClientTLS(pki / "ca.crt", pki / "client-cli.crt", pki / "client-cli.key", server_name)
        return None
    return ClientTLS(ca, cert, key, server_name)


def state_token(address: str | None, name: str) -> str | None:
    """``TOKENFAB_TOKEN``, else ``<state dir>/<name>`` when ``address`` is the demo's."""
    token = os.environ.get("TOKENFAB_TOKEN")
    if token:
        return token
    state = _up_state(address)
    if state is None and name == "demo-token":  # the demo token is looked for as it always was
        state = state_dir()
    if state is not None and (state / name).exists():
        return (state / name).read_text().strip() or None
    return None


class _BearerBase:
    """Adds ``authorization: Bearer <token>`` to a call unless the caller chose credentials."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if any(key == "authorization" for key, _ in metadata):
            return details
        return details._replace(metadata=grpc.aio.Metadata(*metadata, self._header))


class _UnaryUnary(_BearerBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_BearerBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_BearerBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_BearerBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer(token: str) -> list[Any]:
    """Client interceptors that put ``token`` on every call of a channel (all four call shapes)."""
    return [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


def channel(address: str, tls: ClientTLS | None, *, token: str | None = None) -> grpc.aio.Channel:
    """A channel to ``address``; ``token`` (default: the operator token found for it) rides on
    every call."""
    token = token or state_token(address, "admin-token")
    if tls is None:
        tls = client_tls(None, None, None, None, address)
    interceptors = bearer(token) if token else []
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address, tls.credentials(), options=tls.channel_options(), interceptors=interceptors
    )


def humanize_until(iso: str | None, now: datetime | None = None) -> str:
    if iso is None:
        return "owned"
    end = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (end - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return "expired"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``error: <message>`` on stderr; the caller raises the returned exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def rpc_failure(code: grpc.StatusCode, details: str | None) -> tuple[str, int]:
    """The message and exit code for a call the control plane answered with ``code``: 3 when it
    could not be reached (try again later, or check ``--address``), 2 when it refused the call
    (purely computational, no side-effects)."""
    exit_code = EXIT_UNREACHABLE if code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED
    return f"{code.name}: {details}", exit_code


@dataclass(frozen=True, slots=True)
class TLSFlags:
    """The TLS option group's values (``--tls-ca/--tls-cert/--tls-key/--tls-server-name``)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def resolve(self, address: str | None = None) -> ClientTLS | None:
        """The client TLS material; with ``address``, the state dir's when that is the demo's.
        Bad combinations print a clear error and exit 1."""
        try:
            return client_tls(self.ca, self.cert, self.key, self.server_name, address)
        except ValueError as exc:
            raise fail(str(exc)) from None


NO_TLS_FLAGS = TLSFlags()  # no --tls-* given: the default of every `tls: TLSFlags` parameter
_TLS_GROUP = (("tls_ca", CaOpt), ("tls_cert", CertOpt), ("tls_key", KeyOpt), ("tls_server_name", NameOpt))


def tls_options(command: Callable[..., R]) -> Callable[..., R]:
    """The one TLS option group: ``command`` declares a ``tls: TLSFlags`` parameter and gets the four
    ``--tls-*`` options in its place (same order in ``--help``), handed over as one :class:`TLSFlags`."""
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    at = next((i for i, p in enumerate(params) if p.name == "tls"), None)
    if at is None:
        raise TypeError(f"{command.__name__}: tls_options needs a `tls: TLSFlags` parameter")
    kind = params[at].kind
    group = [inspect.Parameter(name, kind, default=None, annotation=opt) for name, opt in _TLS_GROUP]
    params[at : at + 1] = group

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        values = [kwargs.pop(name, None) for name, _ in _TLS_GROUP]
        return command(*args, tls=TLSFlags(*values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    if signature.return_annotation is not inspect.Signature.empty:
        wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper


@dataclass(frozen=True, slots=True)
class Client:
    """How a CLI command reaches a control plane: the one client helper.

    ``token``: ``--token``/``TOKENFAB_TOKEN`` when given; otherwise ``token_file`` in the state dir
    of the ``tokenfab up`` serving ``address`` (``admin-token`` for operator commands,
    ``demo-token`` for ``tokenfab request``). ``require_token``: no token found is an error (exit 1)
    rather than an unauthenticated call.
    """

    address: str
    tls: TLSFlags = NO_TLS_FLAGS
    token: str | None = None
    token_file: str = "admin-token"
    require_token: bool = False

    def bearer_token(self) -> str | None:
        """The token the calls carry (None: none found and none required)."""
        found = self.token or state_token(self.address, self.token_file)
        if found is None and self.require_token:
            raise fail("no credentials: pass --token or set TOKENFAB_TOKEN")
        return found

    async def acall(
        self, stub_class: Callable[[grpc.aio.Channel], Any], fn: Callable[[Any], Awaitable[R]]
    ) -> R:
        """``await fn(stub)`` on a fresh channel; a gRPC error is printed and exits (2, or 3 when
        the control plane cannot be reached)."""
        token = self.bearer_token()
        async with channel(self.address, self.tls.resolve(self.address), token=token) as ch:
            try:
                return await fn(stub_class(ch))
            except grpc.aio.AioRpcError as exc:
                message, code = rpc_failure(exc.code(), exc.details())
                raise fail(message, code) from None

    def call(self, stub_class: Callable[[grpc.aio.Channel], Any], fn: Callable[[Any], Awaitable[R]]) -> R:
        """:meth:`acall` from synchronous command code (runs its own event loop)."""
        return asyncio.run(self.acall(stub_class, fn))
