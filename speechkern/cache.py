"""Content-addressed on-disk arrays: a second run with the same configuration and input reuses the results.

Entries are safetensors files named by a SHA-256 key of the configuration and the input; writes go to a
temporary file in the same folder and are renamed into place, so an interrupted run never leaves a broken entry.
The default folder is ``$SPEECHKERN_CACHE`` or ``~/.cache/speechkern``. The cache only saves time: a folder that
cannot be used, or a write that fails, is reported once and the run carries on uncached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from speechkern.errors import SpeechkernError
from speechkern.outputs import atomic_write
from speechkern.paths import default_cache_dir

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def usable_cache_dir(cache_dir: str | os.PathLike | None = "default") -> Path | None:
    """The cache folder to use, created if needed: ``"default"`` is :func:`default_cache_dir`, None means no cache.

    A folder that cannot be created or written (``$SPEECHKERN_CACHE`` naming a file, a read-only disk) gives a
    warning naming it and what to do, and None: the caller carries on without a cache.
    """
    if cache_dir is None:
        return None
    folder = default_cache_dir() if cache_dir == "default" else Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as err:
        source = " ($SPEECHKERN_CACHE)" if cache_dir == "default" and os.environ.get("SPEECHKERN_CACHE") else ""
        logger.warning("%s%s cannot hold the feature cache (%s); carrying on without a cache: set SPEECHKERN_CACHE to "
                       "a writable folder, or run without a cache (cache_dir=None)", folder, source,
                       err.strerror or err)  # fmt: skip
        return None
    return folder


def content_key(*parts: Any) -> str:
    """SHA-256 hex digest of JSON-able values and numpy arrays (dtype, shape and bytes of each array)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            digest.update(f"array:{arr.dtype.str}:{arr.shape}".encode())
            digest.update(arr.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


class ArrayCache:
    """A folder of safetensors files keyed by :func:`content_key`; ``root=None`` disables caching."""

    def __init__(self, root: str | os.PathLike | None, namespace: str = "features") -> None:
        self.root = None if root is None else Path(root) / namespace

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key``, or None when absent (or unreadable, which counts as absent)."""
        if self.root is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store arrays under ``key`` atomically (no partial file is ever visible)."""
        if self.root is None:
            return
        contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        try:
            atomic_write(self._path(key), lambda tmp: save_file(contiguous, tmp))
        except (OSError, SafetensorError, SpeechkernError) as err:  # a full or read-only disk (safetensors raises
            # its own error for a failed write), a file where a folder goes: the result is returned, only not kept
            if str(self.root) not in _warned:
                _warned.add(str(self.root))
                logger.warning("%s: cannot write to the feature cache (%s); carrying on without caching",
                               self.root, getattr(err, "strerror", None) or err)  # fmt: skip
