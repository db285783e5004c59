"""NOISEX-92 noise recordings (babble, factory1, destroyer engine, destroyer operations room, ...).

A recipe names a NOISEX-92 noise as ``"noisex:NAME"`` in ``data.noises``; NAME is also the noise's name in the
manifests and result tables (``engine_0dB``). Files are found below ``data.noisex_root`` (or the environment
variable ``SPEECHKERN_NOISEX_ROOT`` / ``NOISEX_ROOT``), recursively, by a name compared without letter case,
``_``, ``-``, spaces and suffixes: ``destroyer_engine.wav``, ``DESTROYERENGINE.WAV`` and ``destroyerengine.sph``
all match ``noisex:destroyerengine``. The paper's short names are aliases: ``engine`` = destroyerengine,
``oproom`` = destroyerops. WAV, FLAC and NIST SPHERE files are read as they are (19.98 kHz, resampled to
``data.sr`` when loaded); MATLAB ``.mat`` files (the Rice University distribution) are converted once to WAV.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from speechkern import audio
from speechkern.corpora.timit import corpus_root, survey
from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)

NOISEX_ENV = ("SPEECHKERN_NOISEX_ROOT", "NOISEX_ROOT")
NOISEX_SR = 19980  # Hz, the rate of the original recordings (also of the .mat files, which store no rate)
SUFFIXES = (".wav", ".flac", ".sph", ".mat")  # in order of preference when one noise comes in several
LAYOUT = "NOISEX-92 recordings such as babble.wav, factory1.wav, destroyerengine.wav, destroyerops.wav (.wav, .flac, .sph or .mat, any case)"  # noqa: E501
ALIASES = {
    "engine": "destroyerengine",
    "oproom": "destroyerops",
    "opsroom": "destroyerops",
    "operationsroom": "destroyerops",
    "destroyeroperationsroom": "destroyerops",
    "destroyeroproom": "destroyerops",
}


def canonical(name: str) -> str:
    """Comparable form of a noise or file name: lower case, no suffixes, no ``_``, ``-`` or spaces, aliases resolved."""
    base = re.sub(r"[\s_\-]", "", Path(name).name.split(".")[0].lower())
    return ALIASES.get(base, base)


def recordings(root: Path) -> dict[str, Path]:
    """Canonical noise name → file for every recording below ``root`` (recursively; hidden files skipped)."""
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(SUFFIXES)}
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        if suffix not in rank or path.name.startswith(".") or not path.is_file():
            continue
        key = canonical(path.name)
        if key not in found or rank[suffix] < rank[found[key].suffix.lower()]:
            found[key] = path
    return found


def find(name: str, noisex_root: str) -> Path:
    """The recording of NOISEX-92 noise ``name`` below the NOISEX root (recipe key or environment variable)."""
    root = corpus_root(noisex_root, "noisex_root", NOISEX_ENV, "NOISEX-92", LAYOUT)
    found = recordings(root)
    if not found:
        raise SpeechkernError(f"{root}: no NOISEX-92 recordings found (expected {LAYOUT}); set data.noisex_root or "
                              "NOISEX_ROOT")  # fmt: skip
    key = canonical(name)
    if key not in found:
        raise SpeechkernError(f"{root}: no NOISEX-92 recording named {name!r} (found: {', '.join(sorted(found))}; "
                              f"expected {LAYOUT})")  # fmt: skip
    return found[key]


def resolve(name: str, noisex_root: str, workdir: Path) -> Path:
    """An audio file of NOISEX-92 noise ``name``: the recording itself, or its WAV conversion under ``workdir``
    when it is a ``.mat`` file. The header is checked and what was found is logged."""
    path = find(name, noisex_root)
    if path.suffix.lower() == ".mat":
        path = _convert_mat(path, Path(workdir) / f"noisex-{canonical(name)}.wav")
    info = survey([path], "NOISEX-92", "survey/noisex")
    logger.info("NOISEX-92 %s: %s (%.1f s at %d Hz)", name, path, info.seconds, info.rates[0])
    return path


def _convert_mat(path: Path, out: Path) -> Path:
    """Write the single waveform of a NOISEX-92 ``.mat`` file as a 19.98 kHz WAV (once; reused afterwards)."""
    if out.is_file():
        return out
    from scipy.io import loadmat

    try:
        contents = loadmat(str(path))
    except Exception as err:  # scipy raises several types for damaged files
        raise SpeechkernError(f"{path}: not a readable MATLAB file ({err}); replace or remove it") from None
    arrays = [v for k, v in contents.items() if not k.startswith("__") and isinstance(v, np.ndarray)
              and v.dtype.kind in "fiu" and v.size > NOISEX_SR // 10]  # fmt: skip
    if not arrays:
        raise SpeechkernError(f"{path}: holds no waveform (expected one numeric vector); replace or remove it")
    y = max(arrays, key=lambda a: a.size).astype(np.float64).ravel()
    peak = np.max(np.abs(y))
    if peak == 0:
        raise SpeechkernError(f"{path}: the recording is silent (all zeros); replace or remove it")
    # The level is irrelevant (mixing sets the SNR); scaling only keeps the samples inside [-1, 1].
    audio.save(out, (0.5 * y / peak).astype(np.float32), NOISEX_SR, overwrite=True, subtype="FLOAT")
    logger.info("%s: converted to %s", path, out)
    return out
