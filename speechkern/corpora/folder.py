"""Any folder of clean speech: audio files found recursively, split at random into train/val/test.

The talker of a file is the name of the folder that holds it. The split is a seeded shuffle of the files; if
the folder holds fewer files than the recipe asks for, the three counts shrink in proportion.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from speechkern import audio
from speechkern.corpora import Utterance
from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)


def splits(data, workdir: Path) -> dict[str, list[Utterance]]:
    """Utterances of each split from ``data.clean_dir``."""
    if not data.clean_dir:
        raise SpeechkernError("the folder recipe needs clean speech: add --set data.clean_dir=DIR")
    files = audio.find_audio(data.clean_dir)
    if len(files) < 3:
        raise SpeechkernError(f"{data.clean_dir}: found {len(files)} wav/flac files; need at least 3 (train/val/test)")
    return split_files(files, Path(data.clean_dir), data.n_train, data.n_val, data.n_test, data.seed)


def split_files(files: list[Path], root: Path, n_train: int, n_val: int, n_test: int, seed: int):
    """Seeded random split of ``files`` into the three counts (scaled down when there are too few files)."""
    wanted = n_train + n_val + n_test
    if len(files) < wanted:
        scale = len(files) / wanted
        n_val, n_test = max(1, int(n_val * scale)), max(1, int(n_test * scale))
        n_train = len(files) - n_val - n_test
        logger.warning("%s: %d files for %d requested; using %d/%d/%d", root, len(files), wanted, n_train, n_val,
                       n_test)  # fmt: skip
    order = np.random.default_rng(seed).permutation(len(files))
    chosen = [files[i] for i in order]
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, n_test + n_val + n_train)}
    out = {}
    for split, (lo, hi) in bounds.items():
        out[split] = [_utterance(p, root) for p in sorted(chosen[lo:hi])]
    return {s: out[s] for s in ("train", "val", "test")}


def _utterance(path: Path, root: Path) -> Utterance:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    talker = rel.parent.name or root.name
    return Utterance(id=str(rel.with_suffix("")).replace("/", "__"), path=str(path), talker=talker)
