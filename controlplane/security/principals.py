"""Who is calling: the principal kinds of Tokenfab and the workload identities in certificates.

::

    Principal(kind, name, role)
      node          spiffe://tokenfab/node/<node id>        an agent; acts only on its own node
      executor      spiffe://tokenfab/executor/<cluster>    one cluster's executor (Ray driver)
      controlplane  spiffe://tokenfab/controlplane/<name>   a control-plane instance (executor client)
      client        spiffe://tokenfab/client/<name>         a transport certificate for people's tools
                                                            (the CLI under mTLS); no rights of its own
      operator      bearer token, role admin | viewer       (operators file)
      tenant        bearer token                            (tenants file)
      local         a caller on a plaintext loopback listener; see below

``local``: a control plane or executor listening in plaintext on loopback cannot tell callers
apart. Only when it was started with ``--insecure-local-admin`` (tests, benchmarks, a developer's
own machine) is every caller without a bearer token this one admin principal; by default such a
caller is unauthenticated. It never exists on a TLS listener, and ``tokenfab up`` always runs with
mTLS. Purely computational, no side-effects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

SCHEME = "spiffe://tokenfab/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")


class Kind(StrEnum):
    NODE = "node"
    EXECUTOR = "executor"
    CONTROLPLANE = "controlplane"
    CLIENT = "client"
    OPERATOR = "operator"
    TENANT = "tenant"
    LOCAL = "local"


WORKLOAD_KINDS = (Kind.NODE, Kind.EXECUTOR, Kind.CONTROLPLANE, Kind.CLIENT)


class Role(StrEnum):
    NONE = ""
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Kind
    name: str
    role: Role = Role.NONE

    def __str__(self) -> str:
        role = f" ({self.role.value})" if self.role is not Role.NONE else ""
        return f"{self.kind.value}/{self.name}{role}"

    @property
    def key(self) -> str:
        """One string per principal: what per-principal limits count against."""
        return f"{self.kind.value}/{self.name}"


LOCAL = Principal(Kind.LOCAL, "loopback", Role.ADMIN)


def spiffe_uri(kind: Kind, name: str) -> str:
    """The URI SAN of a workload identity; ValueError for a kind or name that cannot be one."""
    if kind not in WORKLOAD_KINDS:
        raise ValueError(f"kind: {kind.value} identities are bearer tokens, not certificates")
    if not _NAME.match(name):
        raise ValueError(f"name: {name[:40]!r} is not a valid identity name")
    return f"{SCHEME}{kind.value}/{name}"


def principal_from_uri(uri: str) -> Principal | None:
    """``spiffe://tokenfab/<kind>/<name>`` -> Principal; None for anything else (not ours)."""
    if not uri.startswith(SCHEME):
        return None
    kind_text, _, name = uri[len(SCHEME) :].partition("/")
    try:
        kind = Kind(kind_text)
    except ValueError:
        return None
    if kind not in WORKLOAD_KINDS or not _NAME.match(name):
        return None
    return Principal(kind, name)
