"""Bearer tokens of people and services: the tenants file and the operators file.

::

    tenants:                              operators:
      - name: search                        - name: alice
        token_sha256: 9f86d0...               role: admin          # admin | viewer
        max_accelerators: 64                  token_sha256: 2c26b4...
        max_spend_per_hour: 150             - name: dashboards
        max_priority: 10                      role: viewer
                                              token: demo-only     # clear text: demos only

Tokens are stored as their SHA-256 and compared in constant time (``hmac.compare_digest``) against
every entry, so the files hold no secrets and the time taken does not say which entry was close.
:class:`Reloading` re-reads a file when it changes on disk (a Kubernetes Secret update revokes a
token without a restart); a file that no longer parses keeps the last good directory and says so
in the log, so a typo does not lock every operator out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from controlplane.domain.tenants import Tenant as Tenant  # the model is pure data: the domain's
from controlplane.errors import Unauthenticated
from controlplane.security.principals import Role
from tokenfab.errors import PermanentError
from tokenfab.logs import get_logger

log = get_logger("security.tokens")


class TokenFileError(PermanentError, ValueError):
    pass


TenantFileError = TokenFileError


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str:
    """The token of an ``authorization: Bearer <token>`` value; Unauthenticated otherwise."""
    if not authorization:
        raise Unauthenticated("authorization: missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization: expected 'Bearer <token>'")
    return token.strip()


def _match(entries: list[tuple[str, Any]], token: str) -> Any:
    digest = token_digest(token)
    found = None
    for expected, entry in entries:  # no early exit: every entry is compared
        if hmac.compare_digest(expected, digest):
            found = entry
    return found


def _entries(path: Path, top: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TokenFileError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(top), list):
        raise TokenFileError(f"{path}: expected a top-level '{top}' list")
    out = []
    for i, raw in enumerate(data[top]):
        where = f"{path}: {top}[{i}]"
        if not isinstance(raw, dict) or not raw.get("name"):
            raise TokenFileError(f"{where}: needs a name")
        if "token_sha256" in raw:
            digest = str(raw["token_sha256"]).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise TokenFileError(f"{where}.token_sha256: expected 64 hex digits")
        elif "token" in raw:
            digest = token_digest(str(raw["token"]))
        else:
            raise TokenFileError(f"{where}: needs token or token_sha256")
        out.append((digest, raw))
    names = [str(raw["name"]) for _, raw in out]
    if len(set(names)) != len(names):
        raise TokenFileError(f"{path}: a {top[:-1]} name appears twice")
    digests = [d for d, _ in out]
    if len(set(digests)) != len(digests):
        raise TokenFileError(f"{path}: two {top} share a token")
    return out


class TenantDirectory:
    def __init__(self, entries: list[tuple[str, Tenant]]) -> None:
        """``entries``: (sha256 hex of the token, tenant)."""
        self._entries = entries
        names = [t.name for _, t in entries]
        if len(set(names)) != len(names):
            raise TokenFileError("tenants: a tenant name appears twice")

    def authenticate(self, authorization: str | None) -> Tenant:
        found = self.find(bearer_token(authorization))
        if found is None:
            raise Unauthenticated("authorization: unknown token")
        return found

    def find(self, token: str) -> Tenant | None:
        found: Tenant | None = _match(self._entries, token)
        return found

    def tenant(self, name: str) -> Tenant | None:
        return next((t for _, t in self._entries if t.name == name), None)

    @classmethod
    def load(cls, path: Path) -> TenantDirectory:
        entries = []
        for i, (digest, raw) in enumerate(_entries(path, "tenants")):
            try:
                tenant = Tenant(
                    str(raw["name"]),
                    int(raw["max_accelerators"]) if raw.get("max_accelerators") is not None else None,
                    float(raw["max_spend_per_hour"]) if raw.get("max_spend_per_hour") is not None else None,
                    int(raw["max_priority"]) if raw.get("max_priority") is not None else None,
                )
            except (TypeError, ValueError) as exc:
                raise TokenFileError(f"{path}: tenants[{i}]: {exc}") from None
            entries.append((digest, tenant))
        return cls(entries)


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: Role


class OperatorDirectory:
    def __init__(self, entries: list[tuple[str, Operator]]) -> None:
        self._entries = entries

    def find(self, token: str) -> Operator | None:
        found: Operator | None = _match(self._entries, token)
        return found

    @classmethod
    def load(cls, path: Path) -> OperatorDirectory:
        entries = []
        for i, (digest, raw) in enumerate(_entries(path, "operators")):
            role = str(raw.get("role", ""))
            if role not in (Role.ADMIN.value, Role.VIEWER.value):
                raise TokenFileError(f"{path}: operators[{i}].role: admin or viewer, got {role[:20]!r}")
            entries.append((digest, Operator(str(raw["name"]), Role(role))))
        return cls(entries)


D = TypeVar("D")


class Reloading(Generic[D]):
    """A directory loaded from ``path``, re-read when the file's identity or mtime changes.

    ``load()`` once at startup raises on a bad file; later checks (at most every ``check_s``)
    keep the last good directory when the new content does not parse.
    """

    def __init__(self, path: Path, loader: Callable[[Path], D], *, check_s: float = 1.0) -> None:
        self.path = path
        self._loader = loader
        self._check_s = check_s
        self._current: D | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> D:
        self._stamp = self._stat()
        self._current = self._loader(self.path)
        self._checked = time.monotonic()
        return self._current

    def get(self) -> D:
        if self._current is None:
            return self.load()
        now = time.monotonic()
        if now - self._checked >= self._check_s:
            self._checked = now
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._current = self._loader(self.path)
                    log.info("tokens.reloaded", file=str(self.path))
                except TokenFileError as exc:
                    log.error("tokens.reload_failed", file=str(self.path), error=str(exc))
        return self._current
