"""Shared pytest configuration: the ``--run-slow`` switch and the fixture paths."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


# A test's tier is the folder it lives in: tests/unit is pure (make test-unit), everything else uses real
# processes or engines. The marker follows the path so that `-m unit` / `-m "not integration"` select
# the same tests as the folders do (a module-level pytestmark in a conftest would have no effect).
TIERS = {"unit": "unit", "integration": "integration", "helm": "integration"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        parts = Path(str(item.path)).relative_to(tests_dir).parts
        tier = TIERS.get(parts[0]) if len(parts) > 1 else None
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
