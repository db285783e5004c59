"""What the benchmark scripts share: where the development audio lies."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = Path(os.environ.get("SPEECHKERN_DEV_DATA") or ROOT.parent / "shared" / "data" / "dev")


def require_dev_data() -> None:
    """Stop with a clear message where the development audio is missing."""
    if not (DEV / "manifest.csv").is_file():
        raise SystemExit(
            f"development audio not found at {DEV}: this benchmark needs ../shared/data/dev beside the checkout "
            "(or SPEECHKERN_DEV_DATA=DIR)"
        )
