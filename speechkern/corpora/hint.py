"""HINT (Hearing in Noise Test) sentences: a folder of audio files, one sentence each, in any sub-folders.

Sentences are found recursively (``.wav``, ``.flac`` or NIST SPHERE ``.sph``; hidden files skipped). The split
is a seeded shuffle: ``data.n_test`` test and ``data.n_val`` validation sentences, and ``data.n_train`` training
sentences (0: all the others). The talker of a sentence is the folder that holds it. The root is
``data.hint_root``, or when that is empty the environment variable ``SPEECHKERN_HINT_ROOT`` or ``HINT_ROOT``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from speechkern import audio
from speechkern.corpora import Utterance
from speechkern.corpora.folder import split_files
from speechkern.corpora.timit import corpus_root, survey
from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)

HINT_ENV = ("SPEECHKERN_HINT_ROOT", "HINT_ROOT")
SUFFIXES = (".wav", ".flac", ".sph")
LAYOUT = "HINT sentences as audio files (.wav, .flac or .sph) in the folder or its sub-folders, e.g. list01/01.wav"


def list_sentences(root: Path) -> list[Path]:
    """Every sentence file below ``root``, sorted; a one-line error when there is none."""
    files = [p for p in audio.find_audio(root, SUFFIXES) if not p.name.startswith(".")]
    if not files:
        raise SpeechkernError(f"{root}: no HINT sentences found (expected {LAYOUT}); set data.hint_root or HINT_ROOT")
    return files


def splits(data, workdir: Path) -> dict[str, list[Utterance]]:
    """Training, validation and test sentences of HINT (see the module docstring); ``workdir`` is unused."""
    root = corpus_root(data.hint_root, "hint_root", HINT_ENV, "HINT", LAYOUT)
    files = list_sentences(root)
    n_val, n_test = data.n_val, data.n_test
    if len(files) < 3 or n_val < 1 or n_test < 1:
        raise SpeechkernError(f"{root}: {len(files)} sentences with n_val={n_val}, n_test={n_test}; HINT needs at "
                              "least one sentence in each of train, validation and test")  # fmt: skip
    n_train = data.n_train or max(len(files) - n_val - n_test, 1)
    found = survey(files, "HINT", "survey/hint")
    logger.info("HINT at %s: %d sentences in %d folders, %.1f min", root, found.files,
                len({p.parent for p in files}), found.seconds / 60)  # fmt: skip
    return split_files(files, root, n_train, n_val, n_test, data.seed)
