"""Token revocation through a Secret update, on the file layout the chart produces.

The chart mounts the tenants and operators Secrets as whole directories (never subPath). The
kubelet writes such a volume as Kubernetes' AtomicWriter does: the files live in a timestamped
directory, ``..data`` is a symlink to it, and each key (``operators.yaml``) is a symlink to
``..data/<key>``; an update writes a new timestamped directory and renames a new ``..data`` link
over the old one in one step. This test builds that layout from the Secret the chart renders,
loads it with the control plane's reloader, swaps ``..data`` as the kubelet does, and checks
that a revoked token stops working and a new one works, with no restart (and that a subPath-style
bind of the old file, which the kubelet never updates, would have kept the revoked token).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import yaml

from controlplane.security.tokens import OperatorDirectory, Reloading, TenantDirectory
from tests.helm.test_chart import by_kind, render


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _secret_file(values: dict[str, object], secret: str, key: str) -> str:
    (doc,) = [d for d in by_kind(render(values), "Secret") if d["metadata"]["name"] == secret]
    text: str = doc["stringData"][key]
    return text


def _publish(volume: Path, key: str, text: str, generation: int) -> None:
    """One kubelet AtomicWriter update of a Secret volume holding ``key``."""
    stamped = volume / f"..2026_12_01_00_00_0{generation}.000000000"
    stamped.mkdir()
    (stamped / key).write_text(text)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(stamped.name)
    os.replace(tmp, volume / "..data")  # the atomic swap
    link = volume / key
    if not link.is_symlink():
        link.symlink_to(f"..data/{key}")


def test_a_secret_update_revokes_an_operator_token_without_restart(tmp_path: Path) -> None:
    before = {"controlPlane": {"operators": {"entries": [
        {"name": "alice", "role": "admin", "token_sha256": digest("alice-token")},
        {"name": "bob", "role": "viewer", "token_sha256": digest("bob-token")},
    ]}}}  # fmt: skip
    after = {"controlPlane": {"operators": {"entries": [
        {"name": "alice", "role": "admin", "token_sha256": digest("alice-token-2")},
        {"name": "bob", "role": "viewer", "token_sha256": digest("bob-token")},
    ]}}}  # fmt: skip
    volume = tmp_path / "operators"
    volume.mkdir()
    _publish(volume, "operators.yaml", _secret_file(before, "tf-tokenfab-operators", "operators.yaml"), 1)
    frozen = tmp_path / "subpath-operators.yaml"  # what a subPath mount would keep showing
    frozen.write_text((volume / "operators.yaml").read_text())

    operators = Reloading(volume / "operators.yaml", OperatorDirectory.load, check_s=0.0)
    stale = Reloading(frozen, OperatorDirectory.load, check_s=0.0)
    assert operators.get().find("alice-token") is not None
    assert operators.get().find("alice-token-2") is None

    time.sleep(0.01)  # a distinct mtime for the new generation
    _publish(volume, "operators.yaml", _secret_file(after, "tf-tokenfab-operators", "operators.yaml"), 2)
    assert operators.get().find("alice-token") is None  # revoked
    found = operators.get().find("alice-token-2")
    assert found is not None and found.name == "alice"
    assert operators.get().find("bob-token") is not None  # the others are untouched
    assert stale.get().find("alice-token") is not None  # why the chart never uses subPath


def test_a_secret_update_revokes_a_tenant_token_without_restart(tmp_path: Path) -> None:
    def values(token: str) -> dict[str, object]:
        return {"controlPlane": {"tenants": {"entries": [{"name": "search", "token_sha256": digest(token)}]}}}

    volume = tmp_path / "tenants"
    volume.mkdir()
    _publish(volume, "tenants.yaml", _secret_file(values("t1"), "tf-tokenfab-tenants", "tenants.yaml"), 1)
    tenants = Reloading(volume / "tenants.yaml", TenantDirectory.load, check_s=0.0)
    assert tenants.get().find("t1") is not None
    assert yaml.safe_load((volume / "tenants.yaml").read_text())["tenants"][0]["name"] == "search"
    time.sleep(0.01)
    _publish(volume, "tenants.yaml", _secret_file(values("t2"), "tf-tokenfab-tenants", "tenants.yaml"), 2)
    assert tenants.get().find("t1") is None
    assert tenants.get().find("t2") is not None
