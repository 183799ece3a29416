"""Packaging checks: generated code matches the .proto files; public surfaces are what they say."""

from __future__ import annotations

import controlplane.catalog
import controlplane.domain
import controlplane.fleet
import controlplane.store
from tokenfab import protogen


def test_generated_code_matches_protos() -> None:
    assert protogen.drift() == [], "run `make protos` and commit the result"


def test_public_exports_resolve() -> None:
    for module in (controlplane.catalog, controlplane.domain, controlplane.fleet, controlplane.store):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)
        public = {n for n in vars(module) if not n.startswith("_") and n[0].isupper()}
        assert public <= set(module.__all__) | {"Annotations"}, (
            module.__name__,
            public - set(module.__all__),
        )
