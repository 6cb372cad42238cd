"""Shared fixtures and the ``slow`` marker. Builders and paths live in :mod:`tests.helpers`."""

from __future__ import annotations

import pytest

from .helpers import external_path


@pytest.fixture
def external():
    """``external("acasxu/prop_3.vnnlib")`` -> Path, skipping when ../shared is absent."""
    return external_path


def pytest_configure(config):
    """Register the ``slow`` marker: long randomized runs (fuzz, soak), the third-party model
    sweeps and the slowest deadline checks. CI runs them all; deselect with ``-m "not slow"``."""
    config.addinivalue_line(
        "markers", "slow: a long run (fuzz, soak, third-party sweeps); CI still runs it"
    )
