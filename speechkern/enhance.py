"""Enhancement: features → mask → waveform, for whole recordings of any rate, length and channel count.

Long recordings are processed in chunks whose edges overlap by a margin; each chunk's margins are discarded,
and chunk boundaries fall on the frame grid, so the output has no seams and memory stays bounded.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechkern import audio, features
from speechkern.errors import SpeechkernError
from speechkern.models.io import MaskModel
from speechkern.progress import report

logger = logging.getLogger(__name__)

ENHANCED_SUFFIX = "_enhanced"


def apply_mask(mixture: np.ndarray, mask: np.ndarray, model_or_configs) -> np.ndarray:
    """Resynthesise ``mixture`` weighted by ``mask`` (n_frames, n_units) in the target's domain."""
    fc, tc = _configs(model_or_configs)
    if tc.domain == "cochleagram":
        from speechkern import gammatone

        return gammatone.resynthesize(
            mixture, mask.T, sr=fc.sr, n_channels=fc.n_channels, fmin=fc.fmin, fmax=fc.fmax,
            frame_length=fc.frame_length, hop_length=fc.hop_length,
        ).astype(np.float32)  # fmt: skip
    from speechkern import stft

    return stft.resynthesize(mixture, mask.T, frame_length=fc.frame_length, hop_length=fc.hop_length).astype(np.float32)


def _configs(model_or_configs):
    if isinstance(model_or_configs, MaskModel):
        return model_or_configs.feature_config, model_or_configs.target_config
    return model_or_configs


def enhance_signal(model: MaskModel, y: np.ndarray, chunk_s: float = 30.0, margin_s: float = 1.0) -> np.ndarray:
    """Enhance a mono waveform at the model's sample rate; chunks of ``chunk_s`` seconds with ``margin_s`` overlap.

    Every chunk's features see the whole waveform's level gain (:func:`speechkern.features.level_gain`); the mask
    is applied to the unscaled waveform, so the output keeps the input's level.
    """
    fc = model.feature_config
    gain = features.level_gain(y, fc.level_dbfs)
    hop = fc.hop_length
    chunk = max(hop, int(chunk_s * fc.sr) // hop * hop)
    margin = int(np.ceil(margin_s * fc.sr / hop)) * hop
    if len(y) <= chunk + 2 * margin:
        return _enhance_block(model, y, gain)
    out = np.empty_like(y, dtype=np.float32)
    for start in range(0, len(y), chunk):
        stop = min(start + chunk, len(y))
        lo, hi = max(0, start - margin), min(len(y), stop + margin)
        enhanced = _enhance_block(model, y[lo:hi], gain)
        out[start:stop] = enhanced[start - lo : stop - lo]
        report("enhance/chunks", stop, len(y), "enhancing")
    return out


def _enhance_block(model: MaskModel, y: np.ndarray, gain: float | None = None) -> np.ndarray:
    feats = features.extract(y, model.feature_config, device=model.device, gain=gain)
    return apply_mask(y, model.mask(feats), model)


@dataclass
class EnhanceResult:
    """One enhanced file: where from and to, its length in seconds and the seconds spent on it."""

    input: Path
    output: Path
    audio_seconds: float
    compute_seconds: float
    sr: int
    channels: int


def enhance_file(
    model: MaskModel,
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    per_channel: bool = False,
    overwrite: bool = False,
    chunk_s: float = 30.0,
) -> EnhanceResult:
    """Enhance one file into ``out_path``, keeping its sample rate, length and channel count.

    Multichannel input is averaged to mono and enhanced once (the result is written to every channel), or with
    ``per_channel`` each channel is enhanced on its own.
    """
    path, out_path = Path(path), Path(out_path)
    if out_path.resolve() == path.resolve():
        raise SpeechkernError(f"{out_path}: is the input itself; choose another output name")
    if out_path.exists() and not overwrite:
        raise SpeechkernError(f"{out_path}: exists already; choose another output or pass --overwrite")
    head = audio.info(path)
    started = time.perf_counter()
    y, file_sr = audio.load(path, sr=None, mono=False)  # (channels, samples)
    signals = list(y) if per_channel else [y.mean(axis=0)]
    sr = model.feature_config.sr
    enhanced = []
    for signal in signals:
        x = audio.resample(signal, file_sr, sr)
        e = audio.resample(enhance_signal(model, x, chunk_s=chunk_s), sr, file_sr)
        enhanced.append(_fit_length(e, y.shape[1]))
    out = np.stack(enhanced) if per_channel else np.repeat(enhanced[0][None], y.shape[0], axis=0)
    audio.save(out_path, out if out.shape[0] > 1 else out[0], file_sr, overwrite=overwrite,
               subtype=_pcm_subtype(head.subtype))  # fmt: skip
    return EnhanceResult(path, out_path, y.shape[1] / file_sr, time.perf_counter() - started, file_sr, y.shape[0])


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _pcm_subtype(subtype: str) -> str:
    return subtype if subtype in ("PCM_16", "PCM_24", "FLOAT") else "PCM_16"


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, folders (searched recursively for wav/flac) and glob patterns → a sorted, de-duplicated list."""
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found.extend(f for f in audio.find_audio(p) if not f.stem.endswith(ENHANCED_SUFFIX))
        elif p.exists():
            found.append(p)
        elif any(ch in item for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise SpeechkernError(f"{item}: the pattern matches no files")
            found.extend(matches)
        else:
            raise SpeechkernError(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    if not unique:
        raise SpeechkernError(f"no audio files found in {', '.join(items)}")
    return [Path(os.path.relpath(f)) if f.is_relative_to(Path.cwd()) else f for f in unique]


def output_for(path: Path, out: str | os.PathLike | None, n_inputs: int) -> Path:
    """Where the enhanced version of ``path`` goes: ``-o FILE`` for one input, else ``<stem>_enhanced.<ext>``
    beside the input or inside the ``-o`` folder."""
    suffix = path.suffix if path.suffix.lower() in (".wav", ".flac") else ".wav"
    name = f"{path.stem}{ENHANCED_SUFFIX}{suffix}"
    if out is None:
        return path.with_name(name)
    out = Path(out)
    if n_inputs == 1 and out.suffix.lower() in (".wav", ".flac") and not out.is_dir():
        return out
    return out / name
