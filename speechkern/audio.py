"""Audio files in and out: soundfile for reading and writing, soxr for resampling.

Waveforms are float32 numpy arrays in [-1, 1]; shape ``(n_samples,)`` for mono, ``(n_channels, n_samples)``
for multichannel. Every error names the file and says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from speechkern.errors import SpeechkernError
from speechkern.outputs import atomic_write

AUDIO_SUFFIXES = (".wav", ".flac")


def info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header of an audio file (sample rate, channels, frames), with a clear error when it is not audio."""
    path = Path(path)
    _check_exists(path)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise SpeechkernError(
            f"{path}: not a readable audio file ({err}); give a WAV, FLAC or NIST SPHERE file"
        ) from None


def load(
    path: str | os.PathLike,
    sr: int | None = 16000,
    mono: bool = True,
    start: int = 0,
    stop: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32.

    sr: target sample rate in Hz (resampled if the file differs), or None to keep the file's rate.
    mono: average the channels; otherwise return ``(n_channels, n_samples)``.
    start, stop: sample range in the file's own rate.
    Returns the waveform and its sample rate in Hz.
    """
    path = Path(path)
    _check_exists(path)
    try:
        data, file_sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise SpeechkernError(
            f"{path}: not a readable audio file ({err}); give a WAV, FLAC or NIST SPHERE file"
        ) from None
    if data.shape[0] == 0:
        raise SpeechkernError(f"{path}: the file holds no samples; give a non-empty recording")
    y = data.T  # (channels, samples)
    if mono:
        y = y.mean(axis=0)
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr)
        file_sr = sr
    return np.ascontiguousarray(y, dtype=np.float32), int(file_sr)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling along the last axis with libsoxr (``soxr``, "HQ" quality), float32 out.

    y: ``(n_samples,)`` or ``(n_channels, n_samples)``; orig_sr, target_sr: Hz. Returns
    ``ceil(n_samples·target_sr/orig_sr)`` samples (soxr's length). Measured (tests/test_resample.py): passband flat
    within 0.01 dB up to 0.9 of the lower Nyquist frequency, everything above it attenuated by more than 120 dB,
    for 44.1/48/20 → 16 kHz and 16 → 8 kHz. torchaudio's default windowed sinc, used before, lost 6 dB at 7.9 kHz
    and passed 8.1 kHz at −7 dB on the way to 16 kHz.
    """
    if orig_sr == target_sr:
        return y
    import soxr

    x = np.asarray(y, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(x.T), orig_sr, target_sr, quality="HQ")  # soxr: (frames, channels)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def save(path: str | os.PathLike, y: np.ndarray, sr: int, overwrite: bool = False, subtype: str | None = None):
    """Write a waveform atomically (temporary file, then rename); refuse to replace a file unless asked.

    y: ``(n_samples,)`` or ``(n_channels, n_samples)``; values outside [-1, 1] are clipped by the PCM writer.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SpeechkernError(f"{path}: exists already; choose another output name or pass --overwrite")
    data = np.asarray(y, dtype=np.float32)
    data = data.T if data.ndim == 2 else data
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    atomic_write(path, lambda tmp: sf.write(tmp, data, sr, format=fmt, subtype=subtype or "PCM_16"))


def find_audio(root: str | os.PathLike, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> list[Path]:
    """All audio files below a folder (recursively, case-insensitive suffix), sorted for reproducibility."""
    root = Path(root)
    if not root.is_dir():
        raise SpeechkernError(f"{root}: no such folder; give a folder that holds {'/'.join(suffixes)} files")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise SpeechkernError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise SpeechkernError(f"{path}: is a folder, not an audio file")
