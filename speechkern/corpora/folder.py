"""Any folder of clean speech: audio files found recursively, split at random into train/val/test.

The talker of a file is the name of the folder that holds it. The split is a seeded shuffle of the files (or,
with ``data.split_by = "talker"``, of whole talkers); if the folder holds fewer files than the recipe asks for,
the three counts shrink in proportion.
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
        raise SpeechkernError("the folder recipe needs clean speech: add the recipe override data.clean_dir=DIR")
    files = audio.find_audio(data.clean_dir)
    if len(files) < 3:
        raise SpeechkernError(f"{data.clean_dir}: found {len(files)} audio files ({audio.FORMATS_HELP}, searched "
                              "recursively); need at least 3 (train/val/test)")  # fmt: skip
    if data.split_by == "talker":
        return split_talkers(files, Path(data.clean_dir), data.n_train, data.n_val, data.n_test, data.seed)
    return split_files(files, Path(data.clean_dir), data.n_train, data.n_val, data.n_test, data.seed)


def split_talkers(files: list[Path], root: Path, n_train: int, n_val: int, n_test: int, seed: int):
    """Seeded split that keeps every talker in one split: test and validation take whole talkers (in a seeded
    order, skipping talkers that would overshoot the count) until they hold ``n_test`` / ``n_val`` files; the
    training split takes the other talkers' files (``n_train`` of them at random, 0 = all).

    Raises SpeechkernError when fewer than three talkers are there or a split would be empty.
    """
    by_talker: dict[str, list[Utterance]] = {}
    for p in files:
        u = _utterance(p, root)
        by_talker.setdefault(u.talker, []).append(u)
    if len(by_talker) < 3:
        raise SpeechkernError(f"{root}: {len(by_talker)} talker folders; data.split_by = 'talker' needs at least 3 "
                              "(one folder per talker)")  # fmt: skip
    rng = np.random.default_rng(seed)
    left = [sorted(by_talker)[i] for i in rng.permutation(len(by_talker))]
    out: dict[str, list[Utterance]] = {}
    for split, wanted in (("test", n_test), ("val", n_val)):
        chosen: list[Utterance] = []
        for talker in list(left):
            if len(chosen) >= wanted:
                break
            if len(chosen) + len(by_talker[talker]) <= wanted:
                chosen += by_talker[talker]
                left.remove(talker)
        if not chosen:  # every talker has more files than wanted: take the smallest one
            smallest = min(left, key=lambda t: len(by_talker[t]))
            chosen = by_talker[smallest]
            left.remove(smallest)
        out[split] = sorted(chosen, key=lambda u: u.path)
    train = sorted((u for t in left for u in by_talker[t]), key=lambda u: u.path)
    if not train:
        raise SpeechkernError(f"{root}: no talker is left for training after the validation and test talkers")
    if 0 < n_train < len(train):
        train = [train[i] for i in np.sort(rng.choice(len(train), size=n_train, replace=False))]
    out["train"] = train
    logger.info("%s: talkers held out, %d/%d/%d files from %d/%d/%d talkers", root, len(train), len(out["val"]),
                len(out["test"]), len(left), len({u.talker for u in out["val"]}),
                len({u.talker for u in out["test"]}))  # fmt: skip
    return {s: out[s] for s in ("train", "val", "test")}


def split_files(files: list[Path], root: Path, n_train: int, n_val: int, n_test: int, seed: int):
    """Seeded random split of ``files`` into the three counts (scaled down when there are too few files);
    ``n_train`` 0: every file not held out for validation and test (it gave an empty training split)."""
    if n_train == 0:
        n_train = max(len(files) - n_val - n_test, 0)
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
