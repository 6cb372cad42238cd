"""Shared test fixtures: paths to the third-party models in ../shared (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = REPO.parent / "shared" / "models" / "external"
MODELS = REPO / "models"


def external_path(relative: str) -> Path:
    """Path of a third-party model under ../shared/models/external, or skip the test."""
    path = EXTERNAL / relative
    if not path.exists():
        pytest.skip(f"third-party model {relative} not found: ../shared/models/external is absent")
    return path


@pytest.fixture
def external():
    """``external("acasxu/prop_3.vnnlib")`` -> Path, skipping when ../shared is absent."""
    return external_path


def pytest_configure(config):
    """Register the ``slow`` marker (fuzz and soak runs; deselect with ``-m "not slow"``)."""
    config.addinivalue_line("markers", "slow: a long randomized run (fuzz harness, soak test)")
