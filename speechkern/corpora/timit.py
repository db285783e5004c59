"""TIMIT in the LDC layout: ``TRAIN/`` and ``TEST/`` with ``DR1..DR8/<speaker>/<utterance>.WAV`` (NIST SPHERE).

Upper- or lower-case names both work, and so do copies whose TRAIN/TEST folders sit one or two levels below the
given root (``TIMIT/``, ``data/``) and copies converted to RIFF WAV (``SA1.WAV.wav`` beside ``SA1.WAV``: the
converted file is used). The SA dialect sentences are left out, as is standard: every speaker reads the same two.

Splits (SPEC §2, §8): ``data.n_train`` training and ``data.n_val`` validation utterances drawn at random (seeded,
no overlap) from the SI/SX utterances of TRAIN (``n_train = 0``: all those not drawn for validation); the test
split is the 192-utterance core test set (24 speakers, 8 SI/SX sentences each) or, with
``data.timit_test = "complete"``, every SI/SX utterance of TEST (1344). ``data.n_test > 0`` caps the test split
to a seeded random subset for quick runs; 0 keeps all of it. The talker of an utterance is its speaker folder.

The root is ``data.timit_root``, or when that is empty the environment variable ``SPEECHKERN_TIMIT_ROOT`` or
``TIMIT_ROOT``. This module also holds the helpers the other corpus readers share: :func:`corpus_root` (recipe
key or environment variable) and :func:`survey` (header check of every file, counts and duration).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speechkern.corpora import Utterance
from speechkern.errors import SpeechkernError
from speechkern.progress import report

logger = logging.getLogger(__name__)

TIMIT_ENV = ("SPEECHKERN_TIMIT_ROOT", "TIMIT_ROOT")
LAYOUT = "TRAIN/ and TEST/ with DR1..DR8/<speaker>/<utt>.WAV, upper or lower case"

#: The core test set: 2 male and 1 female speaker per dialect region, 8 SI/SX sentences each (192 utterances).
CORE_TEST_SPEAKERS: dict[str, tuple[str, ...]] = {
    "DR1": ("MDAB0", "MWBT0", "FELC0"),
    "DR2": ("MTAS1", "MWEW0", "FPAS0"),
    "DR3": ("MJMP0", "MLNT0", "FPKT0"),
    "DR4": ("MLLL0", "MTLS0", "FJLM0"),
    "DR5": ("MBPM0", "MKLT0", "FNLP0"),
    "DR6": ("MCMJ0", "MJDH0", "FMGD0"),
    "DR7": ("MGRT0", "MNJM0", "FDHC0"),
    "DR8": ("MJLN0", "MPAM0", "FMLD0"),
}
CORE_TEST_SIZE = 192
_CORE = frozenset(s for group in CORE_TEST_SPEAKERS.values() for s in group)

_REGION = re.compile(r"dr[1-8]", re.IGNORECASE)
_SENTENCE = re.compile(r"s[ix]\d+", re.IGNORECASE)  # SI and SX sentences; SA (dialect) ones are left out


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the corpus readers


def corpus_root(value: str, key: str, env: Sequence[str], corpus: str, layout: str) -> Path:
    """The folder named by the recipe key ``data.<key>``, else by the first of the ``env`` variables that is set.

    value: the recipe's value (empty: look at the environment); corpus, layout: for the error messages.
    Raises a one-line SpeechkernError when neither is given or the folder does not exist.
    """
    source = f"data.{key}"
    if not value:
        source = next((name for name in env if os.environ.get(name)), "")
        if not source:
            raise SpeechkernError(
                f"the {corpus} corpus is not given: add the recipe override data.{key}=DIR or set {env[-1]}=DIR "
                f"({layout})"
            )
        value = os.environ[source]
        logger.info("%s root from the environment variable %s: %s", corpus, source, value)
    root = Path(value).expanduser()
    if not root.is_dir():
        raise SpeechkernError(f"{root}: no such folder (from {source}); expected {layout}; set data.{key} or {env[-1]}")
    return root


@dataclass(frozen=True)
class Survey:
    """What :func:`survey` found: file count, total duration in seconds, and each file's sample count and rate."""

    files: int
    seconds: float
    frames: tuple[int, ...]
    rates: tuple[int, ...]


def survey(files: Sequence[Path], corpus: str, task: str = "survey") -> Survey:
    """Read the header of every file (no decoding: about 50 µs a file) so that a damaged or empty file stops the
    run now, with its name, rather than hours later. Returns counts and durations for the log."""
    frames, rates = [], []
    for i, path in enumerate(files):
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as err:
            if _is_shorten(path):
                raise SpeechkernError(
                    f"{path}: NIST SPHERE compressed with shorten, which libsndfile cannot read; convert the corpus "
                    "to plain PCM first, e.g. sph2pipe -f wav IN.WAV OUT.WAV"
                ) from None
            reason = getattr(err, "error_string", "") or str(err)
            raise SpeechkernError(
                f"{path}: not readable as audio ({reason}); this {corpus} file looks damaged: replace or remove it"
            ) from None
        if info.frames <= 0:
            raise SpeechkernError(
                f"{path}: the file holds no samples; the {corpus} file is damaged: replace or remove it"
            )
        frames.append(int(info.frames))
        rates.append(int(info.samplerate))
        if len(files) > 1 and ((i + 1) % 500 == 0 or i + 1 == len(files)):
            report(task, i + 1, len(files), f"checking {corpus} files")
    seconds = float(sum(f / r for f, r in zip(frames, rates, strict=True)))
    return Survey(len(files), seconds, tuple(frames), tuple(rates))


def _is_shorten(path: Path) -> bool:
    """True for a NIST SPHERE file whose header declares shorten compression (some LDC distributions)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return head.startswith(b"NIST_1A") and b"shorten" in head


def child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` in any letter case, or None."""
    wanted = name.lower()
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and entry.name.lower() == wanted:
            return entry
    return None


def subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted (hidden ones such as macOS metadata are skipped)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def seeded_subset(items: list, limit: int, seed: int) -> list:
    """``limit`` items drawn at random (seeded) in their original order; all of them when ``limit`` is 0 or more."""
    if limit <= 0 or limit >= len(items):
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


# ---------------------------------------------------------------------------------------------------------
# TIMIT


def find_timit(root: Path) -> Path:
    """The folder holding TRAIN/ and TEST/ (any case): ``root`` itself or a folder up to two levels below it."""
    level = [root]
    for _ in range(3):
        for folder in level:
            if child(folder, "train") and child(folder, "test"):
                return folder
        level = [sub for folder in level for sub in subfolders(folder)]
    raise SpeechkernError(f"{root}: no TIMIT corpus found (expected {LAYOUT}); set data.timit_root or TIMIT_ROOT")


def list_split(split_dir: Path) -> list[tuple[str, str, str, Path]]:
    """SI/SX utterances of TRAIN or TEST as ``(region, speaker, sentence, file)``, upper-case names, sorted."""
    rows = []
    for region in subfolders(split_dir):
        if not _REGION.fullmatch(region.name):
            continue
        for speaker in subfolders(region):
            files: dict[str, Path] = {}
            for f in sorted(speaker.iterdir()):
                name = f.name
                if name.startswith(".") or not f.is_file() or not name.lower().endswith(".wav"):
                    continue
                sentence = name.split(".")[0]
                if not _SENTENCE.fullmatch(sentence):
                    continue
                key = sentence.upper()
                # A converted copy (SX1.WAV.wav, RIFF) beside the SPHERE original: take the converted one.
                if key not in files or name.lower().endswith(".wav.wav"):
                    files[key] = f
            rows += [(region.name.upper(), speaker.name.upper(), s, f) for s, f in sorted(files.items())]
    return rows


def _utterance(row: tuple[str, str, str, Path]) -> Utterance:
    region, speaker, sentence, path = row
    return Utterance(id=f"{region}_{speaker}_{sentence}", path=str(path), talker=speaker)


def splits(data, workdir: Path) -> dict[str, list[Utterance]]:
    """Training, validation and test utterances of TIMIT (see the module docstring); ``workdir`` is unused."""
    root = find_timit(corpus_root(data.timit_root, "timit_root", TIMIT_ENV, "TIMIT", LAYOUT))
    train_dir, test_dir = child(root, "train"), child(root, "test")
    assert train_dir is not None and test_dir is not None  # find_timit checked both
    train_rows, test_rows = list_split(train_dir), list_split(test_dir)
    for folder, rows in ((train_dir, train_rows), (test_dir, test_rows)):
        if not rows:
            raise SpeechkernError(
                f"{folder}: no SI/SX utterances found (expected {LAYOUT}); check data.timit_root or TIMIT_ROOT"
            )

    if data.timit_test == "core":
        test_rows = [r for r in test_rows if r[1] in _CORE]
        if not test_rows:
            raise SpeechkernError(
                f"{test_dir}: none of the 24 core-test speakers found (expected e.g. DR1/MDAB0/SI1039.WAV); "
                'use data.timit_test="complete" for a copy without them'
            )

    train_info = survey([r[3] for r in train_rows], "TIMIT", "survey/timit-train")
    test_info = survey([r[3] for r in test_rows], "TIMIT", "survey/timit-test")
    logger.info("TIMIT at %s: TRAIN %d speakers, %d SI/SX utterances, %.2f h; %s test set %d speakers, %d "
                "utterances, %.1f min", root, len({r[1] for r in train_rows}), train_info.files,
                train_info.seconds / 3600, data.timit_test, len({r[1] for r in test_rows}), test_info.files,
                test_info.seconds / 60)  # fmt: skip
    if data.timit_test == "core":
        missing = sorted(_CORE - {r[1] for r in test_rows})
        if missing or len(test_rows) != CORE_TEST_SIZE:
            logger.warning("%s: the core test set has %d of %d utterances (missing speakers: %s); results are not "
                           "comparable with the paper's", test_dir, len(test_rows), CORE_TEST_SIZE,
                           ", ".join(missing) or "none")  # fmt: skip

    n_val = data.n_val
    n_train = data.n_train or len(train_rows) - n_val
    if n_train + n_val > len(train_rows):
        n_val = max(1, min(n_val, len(train_rows) // 10))
        n_train = len(train_rows) - n_val
        logger.warning("%s: %d SI/SX utterances for %d + %d requested; using %d for training and %d for validation",
                       train_dir, len(train_rows), data.n_train, data.n_val, n_train, n_val)  # fmt: skip
    if n_train < 1:
        raise SpeechkernError(f"{train_dir}: {len(train_rows)} SI/SX utterances are too few to train and validate")
    order = np.random.default_rng(data.seed).permutation(len(train_rows))
    train = sorted(order[:n_train])
    val = sorted(order[n_train : n_train + n_val])
    test = seeded_subset(test_rows, data.n_test, data.seed + 1)
    return {
        "train": [_utterance(train_rows[i]) for i in train],
        "val": [_utterance(train_rows[i]) for i in val],
        "test": [_utterance(r) for r in test],
    }
