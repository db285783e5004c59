"""Where speechkern keeps files between runs: the cache folder shared by the on-disk array cache and KeOps."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$SPEECHKERN_CACHE`` if set, else ``$XDG_CACHE_HOME/speechkern`` or ``~/.cache/speechkern``."""
    if os.environ.get("SPEECHKERN_CACHE"):
        return Path(os.environ["SPEECHKERN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "speechkern"
