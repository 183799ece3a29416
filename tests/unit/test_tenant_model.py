"""The tenant model is the domain's pure data; every older import path names the same class."""

from __future__ import annotations

from pathlib import Path

import controlplane.capacity as capacity
import controlplane.capacity.tenants as capacity_tenants
import controlplane.security.tokens as tokens
from controlplane.domain.tenants import Tenant


def test_every_import_path_names_the_domain_model() -> None:
    assert capacity.Tenant is capacity_tenants.Tenant is tokens.Tenant is Tenant
    assert Tenant.__module__ == "controlplane.domain.tenants"


def test_the_directory_builds_domain_tenants(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n  - name: search\n    token: demo-only\n    max_accelerators: 4\n    max_priority: 3\n"
    )
    directory = tokens.TenantDirectory.load(path)
    found = directory.tenant("search")
    assert found == Tenant("search", max_accelerators=4, max_priority=3)
