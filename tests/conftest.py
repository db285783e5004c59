"""Shared test fixtures: the development audio, a private KeOps cache, small deterministic signals."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# KeOps reads its cache folder when imported: give the test run a private one before any test imports it.
os.environ.setdefault("KEOPS_CACHE_FOLDER", tempfile.mkdtemp(prefix="speechkern-keops-"))

DEV_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"


@pytest.fixture(scope="session")
def dev_data() -> Path:
    """The real development audio (../shared/data/dev); tests that need it skip where it is absent."""
    if not (DEV_DATA / "clean").is_dir():
        pytest.skip(f"development audio not found at {DEV_DATA} (expected ../shared/data/dev beside the checkout)")
    return DEV_DATA
