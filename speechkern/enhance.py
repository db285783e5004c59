"""Enhancement: features → mask → waveform, for whole recordings of any rate, length and channel count.

A recording is read, enhanced and written block by block: block edges overlap by a margin that is discarded, and
block boundaries fall on the frame grid, so the output has no seams and memory stays bounded at any length. The
clean-input guard's weight is the whole recording's, gathered over the blocks. The output goes to a temporary file
beside its target and is renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechkern import audio, features, fullband, limits, postfilter
from speechkern.errors import SpeechkernError
from speechkern.models.mask_model import MaskModel
from speechkern.outputs import atomic_write, check_name, check_writable
from speechkern.progress import report

logger = logging.getLogger(__name__)

ENHANCED_SUFFIX = "_enhanced"
# Context kept on each side of a block: covers the feature context window, the deltas, the AMS window and the
# gammatone filters' ring-in, so a block's kept part equals the whole-file result.
MARGIN_S = 1.0


def apply_mask(mixture: np.ndarray, mask: np.ndarray, model_or_configs) -> np.ndarray:
    """Resynthesise ``mixture`` weighted by ``mask`` in the target's domain.

    mixture: real mono waveform ``(n_samples,)`` at the model's rate (float; see :func:`check_waveform`).
    mask: ``(n_frames, n_units)`` with ``n_frames = 1 + n_samples // hop_length`` and ``n_units`` the mask's
    channels (:func:`speechkern.targets.mask_units`), finite. model_or_configs: a :class:`MaskModel` or its
    ``(feature_config, target_config)``. Returns float32 ``(n_samples,)``.
    Raises SpeechkernError naming the parameter and the shape or values expected.
    """
    fc, tc = _configs(model_or_configs)
    mixture = check_waveform(mixture, "mixture")
    mask = _check_mask(mask, len(mixture), fc, tc)
    return _resynthesize(mixture, mask, fc, tc)


def _resynthesize(mixture: np.ndarray, mask: np.ndarray, fc, tc) -> np.ndarray:
    if tc.domain == "cochleagram":
        from speechkern import gammatone

        return gammatone.resynthesize(
            mixture, mask.T, sr=fc.sr, n_channels=fc.n_channels, fmin=fc.fmin, fmax=fc.fmax,
            frame_length=fc.frame_length, hop_length=fc.hop_length,
        ).astype(np.float32)  # fmt: skip
    from speechkern import stft

    return stft.resynthesize(mixture, mask.T, frame_length=fc.frame_length, hop_length=fc.hop_length).astype(np.float32)


def check_waveform(y, name: str = "y") -> np.ndarray:
    """``y`` as a float32 mono waveform ``(n_samples,)``: :func:`speechkern.audio.check_samples` with
    ``mono=True`` (non-empty, finite, real floating-point samples at full scale 1.0; integer samples refused)."""
    return audio.check_samples(y, name, mono=True)


def _check_mask(mask, n_samples: int, fc, tc) -> np.ndarray:
    """``mask`` as a float array ``(n_frames, n_units)`` fitting ``n_samples``, or SpeechkernError naming it."""
    from speechkern.targets import mask_units

    expected = (1 + n_samples // fc.hop_length, mask_units(tc, fc))
    try:
        m = np.asarray(mask)
    except ValueError:  # a ragged list
        m = np.asarray(None)
    if m.dtype.kind not in "biuf":
        raise SpeechkernError(f"mask: {m.dtype} values; expected real mask values (n_frames, n_units) = {expected}")
    if m.shape != expected:
        raise SpeechkernError(
            f"mask: shape {m.shape} does not fit a {n_samples}-sample mixture; expected (n_frames, n_units) = "
            f"{expected} (1 + n_samples // {fc.hop_length} frames, {expected[1]} {tc.domain} units)"
        )
    if not np.all(np.isfinite(m)):
        raise SpeechkernError("mask: holds NaN or infinite values; expected finite mask values, such as in [0, 1]")
    return m


def _configs(model_or_configs):
    if isinstance(model_or_configs, MaskModel):
        return model_or_configs.feature_config, model_or_configs.target_config
    if isinstance(model_or_configs, tuple) and len(model_or_configs) == 2:
        return model_or_configs
    check_model(model_or_configs, "model_or_configs")  # refuses it, naming what is expected


def check_model(model, name: str = "model") -> MaskModel:
    """``model`` when it is a loaded :class:`MaskModel`, else SpeechkernError naming ``name`` and how to load one
    (a folder path, the usual mistake, is not loaded behind the caller's back: it may be a run of several)."""
    if not isinstance(model, MaskModel):
        shown = repr(model) if model is None or isinstance(model, (str, os.PathLike)) else f"a {type(model).__name__}"
        load = "speechkern.models.select.find_model(FOLDER)[0] (a model folder or run directory)"
        raise SpeechkernError(f"{name}={shown}: expected a loaded MaskModel; load one with {load}")
    return model


def _check_flags(**flags) -> None:
    """Refuse a flag that is no bool: per_channel="no" was true."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise SpeechkernError(f"{name}={value!r}: expected True or False")


def enhance_signal(
    model: MaskModel,
    y: np.ndarray,
    chunk_s: float = 30.0,
    margin_s: float = MARGIN_S,
    clean_guard: bool = True,
    atten_lim_db: float | None = None,
) -> np.ndarray:
    """Enhance a mono float waveform ``y`` ``(n_samples,)`` at the model's sample rate (full scale 1.0; see
    :func:`check_waveform` for what is refused), in memory; blocks of ``chunk_s``
    seconds with ``margin_s`` seconds of overlap on each side (at least the features' reach,
    :func:`speechkern.features.reach_s`). Returns float32 ``(n_samples,)``.

    Every block's features see the whole waveform's level gain (:func:`speechkern.features.level_gain`); the mask
    is applied to the unscaled waveform, so the output keeps the input's level. A DC offset is removed first: it
    is no speech, and it would lower the level gain and reach the features. ``clean_guard``: a recording estimated
    clean passes (partly) unchanged (:class:`speechkern.postfilter.GuardEstimate`), one weight for the whole
    recording, so the output does not depend on ``chunk_s``. ``atten_lim_db``: the most any T-F unit is
    attenuated, in dB (:func:`mask_floor`); None: no limit. Raises SpeechkernError, before any work, for a
    ``chunk_s`` that is not a positive finite number, a ``margin_s`` that is not a finite one ≥ 0, or an odd
    ``atten_lim_db``."""
    check_model(model)
    _check_flags(clean_guard=clean_guard)
    y = check_waveform(y)
    floor = mask_floor(atten_lim_db)
    chunk_s = limits.chunk_seconds(chunk_s)
    hop = model.feature_config.hop_length
    chunk = max(hop, int(chunk_s * model.feature_config.sr) // hop * hop)
    margin_s = _margin_s(model, margin_s)
    margin = math.ceil(margin_s * model.feature_config.sr / hop) * hop
    y = y - np.mean(y, dtype=np.float64).astype(np.float32)
    gain = features.level_gain(y, model.feature_config.level_dbfs)
    out = np.empty(len(y), dtype=np.float32)
    with _guard(model, clean_guard, "memory") as guard:  # the recording is in memory: no file for its energies
        for start, stop, lo, hi in blocks(len(y), chunk, margin):
            kept = (start - lo, None if stop == len(y) else stop - lo)
            enhanced = _enhance_at_rate(model, y[lo:hi], model.feature_config.sr, gain, guard, kept, floor)
            out[start:stop] = enhanced[start - lo : stop - lo]
        return postfilter.blend(y, out, _weight(guard, model))


def mask_floor(atten_lim_db: float | None) -> float:
    """The smallest mask value that attenuates by at most ``atten_lim_db`` dB: 10^(−atten_lim_db/20) (the mask
    weights amplitudes); 0 for None or +inf (no limit). A limit keeps some of the noise, for fewer artefacts (as
    DeepFilterNet's attenuation limit does). Enhancing adds floor·y to the resynthesis with the mask
    max(mask, floor) − floor: the same as the floored mask where the mask reaches, and the limit also below the
    filterbank's lowest channel, which no mask reaches (0 dB: the input unchanged). Raises SpeechkernError for
    NaN or a negative limit."""
    if atten_lim_db is None:
        return 0.0
    if not (limits.is_number(atten_lim_db) and atten_lim_db >= 0):  # NaN fails too
        raise SpeechkernError(f"atten_lim_db={atten_lim_db!r}: expected the most the mask may attenuate, in dB ≥ 0, "
                              "such as 20 (0: no attenuation)")  # fmt: skip
    return 10.0 ** (-float(atten_lim_db) / 20.0)  # 0.0 for +inf


def _guard(model: MaskModel, clean_guard: bool, folder: Path | str | None = None):
    """A recording's guard estimate (a context manager) keeping its file in ``folder`` ("memory": no file), or a
    null context without the guard."""
    if not clean_guard:
        return contextlib.nullcontext()
    return postfilter.GuardEstimate(postfilter.guard_beta(model.target_config), dir=folder)


def _weight(guard: postfilter.GuardEstimate | None, model: MaskModel) -> float:
    return 0.0 if guard is None else guard.weight(model.clean_guard)


def _margin_s(model: MaskModel, margin_s: float) -> float:
    """The block margin in seconds: ``margin_s``, at least the features' reach (NaN was taken as the margin), at
    most :data:`limits.MAX_CHUNK_S`, longer than any recording (1e308 s overflowed int())."""
    margin_s = limits.seconds("margin_s", margin_s, limits.is_real(margin_s) and margin_s >= 0,
                        "seconds of context on each side of a block, such as 1")  # fmt: skip
    return min(max(margin_s, features.reach_s(model.feature_config)), limits.MAX_CHUNK_S)


def blocks(n: int, chunk: int, margin: int) -> Iterator[tuple[int, int, int, int]]:
    """``(start, stop, lo, hi)`` of each block of ``n`` samples: ``[start, stop)`` is kept from the enhanced
    ``[lo, hi)``, which adds up to ``margin`` samples on each side. One block when ``n`` is short."""
    if n <= chunk + 2 * margin:
        yield 0, n, 0, n
        return
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        yield start, stop, max(0, start - margin), min(n, stop + margin)


@dataclass
class EnhanceResult:
    """One enhanced file: where from and to, its length in seconds, the seconds spent on it, and notes for the
    user (channels averaged, encoding changed)."""

    input: Path
    output: Path
    audio_seconds: float
    compute_seconds: float
    sr: int
    channels: int
    notes: list[str] = field(default_factory=list)


def enhance_file(
    model: MaskModel,
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    per_channel: bool = False,
    overwrite: bool = False,
    chunk_s: float = 30.0,
    margin_s: float = MARGIN_S,
    clean_guard: bool = True,
    atten_lim_db: float | None = None,
) -> EnhanceResult:
    """Enhance one file into ``out_path``, keeping its sample rate, length, channel count and, where the output's
    format holds it, its encoding (32-bit or float WAVs stay so). Memory is bounded by ``chunk_s``, not the length.

    Multichannel input is averaged to mono and enhanced once (the result is written to every channel, and a note says
    so), or with ``per_channel`` each channel is enhanced on its own, as it is (with a note) where the average cancels
    (opposite phases) or a channel lies 20 dB or more below another (silent, or nearly). Above the model's rate the band
    over its Nyquist frequency is kept, gated by the mask (:mod:`speechkern.fullband`); ``clean_guard`` as in
    :func:`enhance_signal` (with it, a file of several blocks is enhanced into an anonymous float32 temporary file
    beside the output, then blended with the whole file's weight in a second pass; the guard's T-F energies are kept
    beside the output too, and both count in the free-space check) and ``atten_lim_db`` as in :func:`enhance_signal`.
    Raises SpeechkernError naming the file, before any compute, when the output exists (without ``overwrite``), is
    the input, has a suffix soundfile cannot write, or lies where it cannot be written or does not fit; when the
    input is not audio or shorter than one frame; and, while running, when it holds NaN/infinite samples or the
    write fails (the previous output, if any, is left as it was).
    """
    check_model(model)
    path, out_path = audio.as_path(path, "path"), audio.as_path(out_path, "out_path")
    _check_flags(per_channel=per_channel, overwrite=overwrite, clean_guard=clean_guard)
    floor = mask_floor(atten_lim_db)
    chunk_s = limits.chunk_seconds(chunk_s)
    margin_s = _margin_s(model, margin_s)
    if out_path.resolve() == path.resolve():  # another path to the input (a link) names the input too, once
        same = " itself" if os.path.abspath(out_path) == os.path.abspath(path) else f" {path} (another path to it)"
        raise SpeechkernError(f"{out_path}: is the input{same}; choose another output name")
    if out_path.exists() and not overwrite:
        raise SpeechkernError(f"{out_path}: exists already; choose another output or pass overwrite=True")
    head = audio.info(path)
    read_as = _stamp(path)
    fmt, subtype = audio.output_format(out_path), audio.output_subtype(out_path, head.format, head.subtype)
    audio.check_holds(out_path, head.samplerate, head.channels, subtype)
    _check_length(path, head, model)
    # before a block allocates what the model file claims; a block is never longer than the file
    limits.check_model_memory(model, "the model", chunk_s, margin_s, longest_s=head.frames / head.samplerate)
    unit = _grid(head.samplerate, model.feature_config.sr, model.feature_config.hop_length)
    chunk = max(unit, round(chunk_s * head.samplerate / unit) * unit)
    margin = math.ceil(margin_s * head.samplerate / unit) * unit
    spans = list(blocks(head.frames, chunk, margin))
    output_bytes = _size_bytes(head.frames * head.channels, fmt, subtype)
    scratch = _scratch_bytes(model, head, len(spans) > 1, clean_guard)
    check_writable(out_path, output_bytes + scratch * (head.channels if per_channel else 1))
    notes = _notes(path, out_path, head, subtype, per_channel)

    started = time.perf_counter()
    # A file of one block is decoded once: its level is measured on the samples that are enhanced. A longer one
    # is read twice, a first pass for its level, so that memory stays bounded by the block.
    whole = _read_all(path, head.frames) if len(spans) == 1 else None
    signal = [whole] if whole is not None else _read_chunks(path, head.frames, chunk)
    gains, offsets, alone = _level_gains(signal, head.frames, model.feature_config.level_dbfs, per_channel)
    if alone is not None:  # every channel is enhanced on its own, each with its scratch files
        check_writable(out_path, output_bytes + scratch * head.channels)
        why = ("cancel when averaged (opposite phase)" if alone == "cancelled" else "differ in level by 20 dB or "
               "more (one is silent or nearly; their average would lower the loudest and fill the quiet "
               "ones)")  # fmt: skip
        notes = [n for n in notes if "were averaged" not in n] + [
            f"{path}: its {head.channels} channels {why}, so each channel was enhanced on its own"
        ]

    over = {"samples": 0, "peak": 0.0}  # written samples beyond full scale, which integer encodings clip

    def put(writer, block: np.ndarray) -> None:
        """Write ``block`` (frames × channels), counting what lies beyond full scale."""
        beyond = np.abs(block) > 1.0
        if beyond.any():
            over["samples"] += int(np.count_nonzero(beyond))
            over["peak"] = max(over["peak"], float(np.abs(block).max()))
        writer.write(audio.pcm_rounded(block, subtype))

    def write(tmp: str) -> None:
        import soundfile as sf

        with contextlib.ExitStack() as files:
            reader = None if whole is not None else files.enter_context(audio.open_read(path))
            writer = files.enter_context(
                sf.SoundFile(audio.native(tmp), "w", head.samplerate, head.channels, subtype, format=fmt)
            )
            guards = [files.enter_context(_guard(model, clean_guard, Path(tmp).parent)) for _ in gains]
            # With the guard, a file of several blocks is enhanced into a temporary file first: the guard's weight
            # is the whole file's, known only after its last block; a second pass blends and writes.
            store = None
            if clean_guard and len(spans) > 1:
                store = files.enter_context(tempfile.TemporaryFile(dir=Path(tmp).parent))
            steps = head.frames * (1 if store is None else 2)  # one bar over both passes
            for start, stop, lo, hi in spans:
                y = whole if reader is None else audio.read_block(reader, lo, hi)
                _check_unchanged(path, read_as, len(spans))
                kept = (start - lo, None if stop == head.frames else stop - lo)
                signals = _signals(y - offsets, gains)
                enhanced = np.stack([_enhance_at_rate(model, s, head.samplerate, g, guard, kept, floor)
                                     for s, g, guard in zip(signals, gains, guards, strict=True)])  # fmt: skip
                enhanced = enhanced[:, start - lo : stop - lo]
                if store is None:
                    weights = [_weight(guard, model) for guard in guards]
                    put(writer, _blended(signals[:, start - lo : stop - lo], enhanced, weights, head.channels).T)
                else:
                    store.write(np.ascontiguousarray(enhanced.T, dtype=np.float32).tobytes())
                report("enhance/blocks", stop, steps, f"enhancing {path.name}")
            if store is None:
                return
            weights = [_weight(guard, model) for guard in guards]
            store.seek(0)
            for start, stop, _, _ in spans:
                enhanced = np.frombuffer(store.read((stop - start) * len(gains) * 4), dtype=np.float32)
                signals = _signals(audio.read_block(reader, start, stop) - offsets, gains)
                _check_unchanged(path, read_as, len(spans))
                enhanced = enhanced.reshape(stop - start, len(gains)).T
                put(writer, _blended(signals, enhanced, weights, head.channels).T)
                report("enhance/blocks", head.frames + stop, steps, f"blending {path.name}")

    with audio.write_errors(out_path):
        atomic_write(out_path, write, replace=overwrite)
    seconds = time.perf_counter() - started
    if over["samples"] and audio.clips(subtype):  # silent before: the encoder cut the peaks off
        share = over["samples"] / max(1, head.frames * head.channels)
        notes.append(f"{out_path}: {over['samples']} samples ({share:.2%}) of the enhanced output exceed full scale "
                     f"(peak {over['peak']:.3g}, {20 * math.log10(over['peak']):+.1f} dBFS) and were clipped in its "
                     f"{subtype} encoding; lower the input's level by that much (the output keeps it), or give a "
                     "float WAV input, whose output holds them")  # fmt: skip
    return EnhanceResult(path, out_path, head.frames / head.samplerate, seconds, head.samplerate, head.channels, notes)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _check_unchanged(path: Path, stamp: tuple[int, int], n_blocks: int) -> None:
    """A file of several blocks is read in passes (its level, its blocks, the guard's blend): refuse one that was
    rewritten in between (same length or not), whose passes would have read different recordings."""
    if n_blocks > 1 and _stamp(path) != stamp:
        raise SpeechkernError(f"{path}: changed while it was enhanced (its size or modification time differs from "
                              "the start); enhance it again once it is complete")  # fmt: skip


def _signals(y: np.ndarray, gains: list[float]) -> np.ndarray:
    """The signals to enhance ``(len(gains), n)`` of a block ``(n_channels, n)``: every channel (one level gain
    each), or their average (one gain)."""
    return y if len(gains) == y.shape[0] and len(gains) > 1 else y.mean(axis=0, keepdims=True)


def _blended(signals: np.ndarray, enhanced: np.ndarray, weights: list[float], n_channels: int) -> np.ndarray:
    """``(n_channels, n)`` to write: each enhanced signal blended with its input by the guard's weight
    (:func:`speechkern.postfilter.blend`), an averaged one repeated on every channel."""
    out = np.stack([postfilter.blend(s, e, w) for s, e, w in zip(signals, enhanced, weights, strict=True)])
    return out if len(out) == n_channels else np.repeat(out, n_channels, axis=0)


def _enhance_at_rate(
    model: MaskModel,
    y: np.ndarray,
    file_sr: int,
    gain: float,
    guard: postfilter.GuardEstimate | None = None,
    kept: tuple[int, int | None] = (0, None),
    floor: float = 0.0,
) -> np.ndarray:
    """Mono ``y`` at ``file_sr`` enhanced at the model's rate and brought back, before the guard's blend; above
    it, the band the model does not see is added back gated by its mask (:func:`speechkern.fullband.gated_high_band`).
    ``guard`` gets the mask and T-F energies of the frames centred in the samples ``kept`` = (start, stop) of
    ``y`` (stop None: to the end); block edges fall on the frame grid, so those are the whole file's frames.
    The mask is then raised to at least ``floor`` (:func:`mask_floor`, which says how; the guard sees the model's
    own mask)."""
    fc = model.feature_config
    low = audio.resample(y, file_sr, fc.sr)
    feats = model.features(low, fc.sr, gain=gain)
    mask = model.mask(feats)
    if guard is not None:
        first = kept[0] * fc.sr // file_sr // fc.hop_length
        last = len(mask) if kept[1] is None else kept[1] * fc.sr // file_sr // fc.hop_length
        energies = postfilter.unit_energies(feats, low, fc, model.target_config)
        wada = model.clean_guard is not None and model.clean_guard.wada_thresholds is not None
        samples = low[first * fc.hop_length : last * fc.hop_length] if wada else None  # only a WADA guard reads them
        guard.add(mask[first:last], energies[first:last], samples)
    if floor > 0:  # resynthesis is linear in the mask: max(mask, floor) = floor + (max(mask, floor) − floor)
        mask = np.maximum(mask, np.float32(floor)) - np.float32(floor)
    out = _fit_length(audio.resample(_resynthesize(low, mask, fc, model.target_config), fc.sr, file_sr), len(y))
    if file_sr > fc.sr:
        out = out + fullband.gated_high_band(y, low, mask, file_sr, fc, model.target_config)
    if floor > 0:  # floor·y, not the floor's resynthesis: that would lose what the filterbank does not cover
        out = out + np.float32(floor) * np.asarray(y, dtype=np.float32)
    return out


def _read_all(path: Path, frames: int) -> np.ndarray:
    with audio.open_read(path) as reader:
        return audio.read_block(reader, 0, frames)


def _read_chunks(path: Path, frames: int, chunk: int) -> Iterator[np.ndarray]:
    with audio.open_read(path) as reader:
        for start in range(0, frames, chunk):
            yield audio.read_block(reader, start, min(start + chunk, frames))


def _level_gains(signal, frames: int, level_dbfs: float, per_channel: bool):
    """``(gains, offsets, alone)`` over a whole file given as consecutive ``(n_channels, n)`` blocks of its
    ``frames`` samples: the level gain of each signal to enhance (every channel, or their average), measured
    without DC, so that every block's features see one gain; each channel's DC offset ``(n_channels, 1)``, removed
    before enhancing; and why the channels are enhanced each on its own though ``per_channel`` is False, in which
    case the gains are per channel: ``"cancelled"`` (the average cancels, :func:`speechkern.audio.
    cancelled_downmix`), ``"uneven"`` (a channel 20 dB or more below another), else None."""
    total = power = mixed = None
    for block in signal:
        y = block.astype(np.float64)
        total = y.sum(axis=1) + (0.0 if total is None else total)
        power = np.sum(y * y, axis=1) + (0.0 if power is None else power)
        m = y.mean(axis=0)
        mixed = float(m @ m) + (0.0 if mixed is None else mixed)
    n = max(1, frames)
    mean = total / n
    variance = np.maximum(power / n - mean**2, 0.0)
    mixed_variance = max(mixed / n - float(mean.mean()) ** 2, 0.0)
    floor = 10 ** (-audio.CANCELLED_DB / 10)
    cancelled = len(mean) > 1 and mixed_variance < variance.mean() * floor
    # a channel 20 dB below another (silent, or nearly): their average would lower the loud one by up to 6 dB and
    # fill the quiet one with it, so each is enhanced on its own
    uneven = len(mean) > 1 and not cancelled and variance.min() < variance.max() * floor
    if not (per_channel or cancelled or uneven):
        variance = np.array([mixed_variance])
    gains = [features.gain_for_rms(float(np.sqrt(v)), level_dbfs) for v in variance]
    why = None if per_channel else "cancelled" if cancelled else "uneven" if uneven else None
    return gains, mean.astype(np.float32)[:, None], why


def _grid(file_sr: int, sr: int, hop: int) -> int:
    """Smallest step in file samples that is a whole number of model samples and a whole number of hops, so
    that blocks resample and frame exactly as the whole file would."""
    g = math.gcd(file_sr, sr)
    step_file, step_model = file_sr // g, sr // g
    return step_file * (hop // math.gcd(hop, step_model))


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _check_length(path: Path, head, model: MaskModel) -> None:
    fc = model.feature_config
    minimum = math.ceil(fc.frame_length * head.samplerate / fc.sr)
    if head.frames < minimum:
        raise SpeechkernError(
            f"{path}: {head.frames} samples ({1000 * head.frames / head.samplerate:.1f} ms) is shorter than one "
            f"frame; the model needs at least {minimum} samples ({1000 * minimum / head.samplerate:.0f} ms) at "
            f"{head.samplerate} Hz"
        )


def _size_bytes(n_samples: int, fmt: str, subtype: str) -> int:
    """Size of an uncompressed output; 0 (unknown) for compressed formats and encodings."""
    width = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
    return 0 if fmt in ("FLAC", "OGG", "MP3") else n_samples * width.get(subtype, 0)


def _scratch_bytes(model: MaskModel, head, several_blocks: bool, clean_guard: bool) -> int:
    """Bytes of the temporary files beside the output for each signal enhanced: with the guard, its T-F energies
    (:meth:`speechkern.postfilter.GuardEstimate.file_bytes`) and, for a file of several blocks, the enhanced
    signal as float32 until the second pass blends it."""
    if not clean_guard:
        return 0
    fc = model.feature_config
    frames = 1 + math.ceil(head.frames * fc.sr / head.samplerate) // fc.hop_length
    return postfilter.GuardEstimate.file_bytes(frames, model.n_units) + (4 * head.frames if several_blocks else 0)


def _notes(path: Path, out_path: Path, head, subtype: str, per_channel: bool) -> list[str]:
    notes = []
    if head.channels > 1 and not per_channel:
        notes.append(
            f"{path}: its {head.channels} channels were averaged, enhanced once and written to every channel; "
            "pass per_channel=True to enhance each channel on its own"
        )
    if head.subtype in ("PCM_24", "PCM_32", "FLOAT", "DOUBLE") and subtype != head.subtype:  # precision lost
        notes.append(
            f"{out_path}: written as {subtype} (the input is {head.subtype}, which {out_path.suffix} files cannot "
            "hold); name the output .wav to keep it"
        )
    return notes


# -- which files, written where ------------------------------------------------------------------------------


@dataclass
class Inputs:
    """What a command line's inputs name: ``files`` (sorted, de-duplicated), ``bases`` (for each file, the folder
    its output path mirrors from: the folder given, or the file's own folder), ``skipped`` (files in the
    folders searched that are not audio, or are earlier outputs), ``broken`` (symbolic links to nothing that the
    folders or patterns held, left out) and ``same`` (``(path, kept)`` for each path left out because it names the
    same file as ``kept``, one of ``files``: a symbolic link to it, or another path to it)."""

    files: list[Path]
    bases: list[Path]
    skipped: list[Path]
    broken: list[Path] = field(default_factory=list)
    same: list[tuple[Path, Path]] = field(default_factory=list)


def find_inputs(items: list[str] | str | os.PathLike) -> Inputs:
    """Files, folders (searched recursively for every format the loader reads, see audio.READ_SUFFIXES) and glob
    patterns: a list of them, or one. Raises SpeechkernError naming the item that matches nothing or is no path."""
    if isinstance(items, (str, bytes, os.PathLike)):  # one item, not its characters
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise SpeechkernError(f"items={items!r}: expected audio files, folders or glob patterns (a list of paths)")
    found: dict[Path, tuple[Path, Path]] = {}
    skipped: list[Path] = []
    broken: list[Path] = []
    same: list[tuple[Path, Path]] = []
    for item in items:
        p = audio.as_path(item, "items")
        item = str(p)
        if p.is_dir():
            files, other, links = audio.scan_folder(p, audio.READ_SUFFIXES)
            broken += links
            earlier = [f for f in files if f.stem.endswith(ENHANCED_SUFFIX)]
            skipped += other + earlier
            pairs = [(f, p) for f in files if not f.stem.endswith(ENHANCED_SUFFIX)]
        elif p.exists():
            pairs = [(p, p.parent)]
        elif any(ch in item for ch in "*?["):
            every = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            matches = [m for m in every if m.is_file()]
            broken += [m for m in every if m.is_symlink() and not m.exists()]
            if not matches:
                links = f" (only {len(broken)} symbolic link(s) to nothing, such as {broken[0]})" if broken else ""
                raise SpeechkernError(f"{item}: the pattern matches no files{links}")
            earlier = [m for m in matches if m.stem.endswith(ENHANCED_SUFFIX)]  # as in folders: not enhanced again
            skipped += earlier
            pairs = [(m, m.parent) for m in matches if m not in earlier]
        else:
            raise SpeechkernError(f"{item}: no such file or folder")
        for f, base in pairs:  # a symbolic link keeps its own path: its output goes beside the link, not the target
            key = f.resolve()
            if key in found and _short(f) != found[key][0] and (_short(f), found[key][0]) not in same:
                same.append((_short(f), found[key][0]))  # enhanced once: said, since no output has this name
            found.setdefault(key, (_short(f), base))
    if not found:
        others = f" ({len(skipped)} file(s) of other types or earlier outputs skipped)" if skipped else ""
        others += f" ({len(broken)} symbolic link(s) to nothing, such as {broken[0]})" if broken else ""
        given = ", ".join(map(str, items))
        raise SpeechkernError(f"no audio files found in {given}{others}; give files soundfile reads")
    return Inputs([f for f, _ in found.values()], [b for _, b in found.values()], skipped, sorted(set(broken)), same)


def _short(f: Path) -> Path:
    f = Path(os.path.abspath(f))  # not resolve(): a link inside the input tree must stay inside it
    return Path(os.path.relpath(f)) if f.is_relative_to(Path.cwd()) else f


def output_name(path: Path) -> str:
    """``x.ogg`` → ``x_enhanced.ogg``: the input's format where soundfile writes it, else ``x.m4a_enhanced.wav``
    (the suffix kept in the name, so that ``x.m4a`` and ``x.wav`` never share an output)."""
    if path.suffix.lower() in audio.FORMATS:
        return f"{path.stem}{ENHANCED_SUFFIX}{path.suffix}"
    return f"{path.name}{ENHANCED_SUFFIX}.wav"


def plan_outputs(inputs: Inputs, out: str | os.PathLike | None) -> list[tuple[Path, Path]]:
    """``(input, output)`` of each file. Without ``out`` each output lies beside its input; ``out`` with an audio
    suffix (see audio.FORMATS) and no trailing slash is the output file of a single input; otherwise ``out`` is a
    folder that mirrors the input tree (``in/a/x.wav`` → ``out/a/x_enhanced.wav`` for the input folder ``in``).

    Raises SpeechkernError, before any work, for an ``out`` file with several inputs or an unwritable suffix, and
    when two inputs would be written to one output or an output would replace an input.
    """
    files = inputs.files
    folder = isinstance(out, (str, bytes)) and os.fsdecode(out).endswith(("/", os.sep))  # Path() drops the slash
    out = None if out is None else audio.as_path(out, "out")
    if out is None:
        plan = [(f, f.with_name(output_name(f))) for f in files]
    elif not folder and _names_a_file(Path(out)):
        if len(files) > 1:
            raise SpeechkernError(f"output {out}: names one file but {len(files)} inputs were given; give a folder")
        audio.output_format(out)
        plan = [(files[0], Path(out))]
    else:
        root = Path(os.path.commonpath([os.path.abspath(b) for b in inputs.bases]))
        plan = [
            (f, Path(out) / Path(os.path.abspath(f)).parent.relative_to(root) / output_name(f)) for f in files
        ]  # fmt: skip
    writers: dict[Path, Path] = {}
    originals = {f.resolve(): f for f in files}
    for f, o in plan:
        check_name(o)  # a name too long for the file system: refused before any work
        key = o.resolve()
        if key in writers:
            raise SpeechkernError(
                f"{writers[key]} and {f} would both be written to {o}; rename one or enhance them separately"
            )
        if key in originals and key != f.resolve():
            raise SpeechkernError(f"{o}: is an input, and enhancing {f} would replace it; choose another output folder")
        writers[key] = f
    return plan


def _names_a_file(out: Path) -> bool:
    suffix = out.suffix.lower()
    return (suffix in audio.FORMATS or suffix in audio.OTHER_AUDIO_SUFFIXES) and not out.is_dir()


def describe_speed(audio_s: float, compute_s: float) -> str:
    """Speed against real time in words: ``"12.5× faster than real time"``, or ``"0.9× real time (slower than
    real time)"`` when enhancing took longer than the audio lasts."""
    speed = audio_s / max(compute_s, 1e-9)
    if speed >= 1.0:
        return f"{speed:.1f}× faster than real time"
    return f"{speed:.2g}× real time (slower than real time)"
