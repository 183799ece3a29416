"""Tenants: bearer tokens and quotas, from a YAML file the operator owns.

::

    tenants:
      - name: search
        token_sha256: 9f86d0...   # sha256 of the bearer token (or `token:` in clear for demos)
        max_accelerators: 64
        max_spend_per_hour: 150

Tokens are compared in constant time against their SHA-256, so the file need not hold secrets.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml

from controlplane.errors import Unauthenticated


class TenantFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    max_accelerators: int | None = None
    max_spend_per_hour: float | None = None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TenantDirectory:
    def __init__(self, entries: list[tuple[str, Tenant]]) -> None:
        """``entries``: (sha256 hex of the token, tenant)."""
        self._entries = entries
        names = [t.name for _, t in entries]
        if len(set(names)) != len(names):
            raise TenantFileError("tenants: a tenant name appears twice")

    def authenticate(self, authorization: str | None) -> Tenant:
        if not authorization:
            raise Unauthenticated("authorization: missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization: expected 'Bearer <token>'")
        digest = token_digest(token.strip())
        found = None
        for expected, tenant in self._entries:
            if hmac.compare_digest(expected, digest):
                found = tenant
        if found is None:
            raise Unauthenticated("authorization: unknown token")
        return found

    def tenant(self, name: str) -> Tenant | None:
        return next((t for _, t in self._entries if t.name == name), None)

    @classmethod
    def load(cls, path: Path) -> TenantDirectory:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TenantFileError(f"{path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("tenants"), list):
            raise TenantFileError(f"{path}: expected a top-level 'tenants' list")
        entries = []
        for i, raw in enumerate(data["tenants"]):
            where = f"{path}: tenants[{i}]"
            if not isinstance(raw, dict) or not raw.get("name"):
                raise TenantFileError(f"{where}: needs a name")
            if "token_sha256" in raw:
                digest = str(raw["token_sha256"]).lower()
            elif "token" in raw:
                digest = token_digest(str(raw["token"]))
            else:
                raise TenantFileError(f"{where}: needs token or token_sha256")
            try:
                tenant = Tenant(
                    str(raw["name"]),
                    int(raw["max_accelerators"]) if raw.get("max_accelerators") is not None else None,
                    float(raw["max_spend_per_hour"]) if raw.get("max_spend_per_hour") is not None else None,
                )
            except (TypeError, ValueError) as exc:
                raise TenantFileError(f"{where}: {exc}") from None
            entries.append((digest, tenant))
        return cls(entries)
