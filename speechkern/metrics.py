"""Objective measures of masks and enhanced speech (SPEC §8).

STOI and extended STOI come from ``pystoi``; PESQ from ``pesq`` (ITU-T P.862): wide-band at 16 kHz and
narrow-band at 8 kHz. A score that is undefined for the input gives NaN and the reason, never a number that
flatters and never an exception that stops an evaluation: PESQ finding no utterance, STOI on speech shorter than
its 30 analysis frames (about 0.4 s) after silence removal, an all-zero reference. Signals whose lengths differ by
more than one frame (20 ms) are refused with a :class:`~speechkern.errors.SpeechkernError`: scoring the common
part of a truncated output would hide the missing part.

Mask measures come in two averages (see :func:`aggregate_mask_counts`): the mean of per-file values, and the
value pooled over every T-F unit of a condition, which is what the OSU PNL toolbox reports.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from speechkern.errors import SpeechkernError

FRAME_S = 0.02  # one analysis frame (20 ms): the length difference scoring tolerates
STOI_MIN_FRAMES = 30  # pystoi's N: frames of one intermediate intelligibility measure


def stoi_min_samples(sr: int) -> int:
    """The fewest samples at ``sr`` Hz that STOI can score (0.41 s): pystoi frames its 10 kHz signal twice, in
    frames of 256 samples with a hop of 128 that stop short of the end, so it needs more than
    ``(30 + 2) · 128 = 4096`` samples at 10 kHz. Silent frames it removes first make the need larger."""
    return (STOI_MIN_FRAMES + 2) * 128 * sr // 10_000 + 1


def mask_mse(estimate: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error per T-F unit between an estimated and an ideal mask (same shape)."""
    return float(np.mean((estimate.astype(np.float64) - target.astype(np.float64)) ** 2))


def mask_mse_per_channel(estimate: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean squared error of each frequency channel; masks are ``(n_frames, n_channels)``."""
    return np.mean((estimate.astype(np.float64) - target.astype(np.float64)) ** 2, axis=0)


def binary_accuracy(estimate: np.ndarray, target: np.ndarray) -> float:
    """Fraction of T-F units whose binary label is right (estimates thresholded at 0.5)."""
    return float(np.mean((estimate >= 0.5) == (target >= 0.5)))


def hit_minus_fa(estimate: np.ndarray, target: np.ndarray) -> float:
    """HIT − FA: hits among speech-dominant units minus false alarms among noise-dominant units."""
    est, ref = estimate >= 0.5, target >= 0.5
    hit = float(np.mean(est[ref])) if ref.any() else 0.0
    fa = float(np.mean(est[~ref])) if (~ref).any() else 0.0
    return hit - fa


def mask_counts(estimate: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Sums over the T-F units of one file that pool into corpus-level MSE and HIT−FA.

    Returns ``sq_err`` (Σ squared error), ``units``, ``hits`` (estimated ≥ 0.5 among speech-dominant units, target
    ≥ 0.5), ``speech_units``, ``false_alarms`` (estimated ≥ 0.5 among noise-dominant units) and ``noise_units``.
    """
    est, ref = np.asarray(estimate, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if est.shape != ref.shape:
        raise SpeechkernError(f"mask shapes differ: estimate {est.shape}, target {ref.shape}")
    on, speech = est >= 0.5, ref >= 0.5
    return {
        "sq_err": float(np.sum((est - ref) ** 2)), "units": float(ref.size),
        "hits": float(np.sum(on & speech)), "speech_units": float(np.sum(speech)),
        "false_alarms": float(np.sum(on & ~speech)), "noise_units": float(np.sum(~speech)),
    }  # fmt: skip


def aggregate_mask_counts(counts: list[dict[str, float]]) -> dict[str, float]:
    """Pooled-over-frames measures of many files, as the OSU PNL toolbox reports them.

    ``mse_pooled`` = Σ squared error / Σ units over all files (long files weigh more than in the mean of per-file
    MSEs); ``hit_fa_pooled`` = Σ hits / Σ speech-dominant units − Σ false alarms / Σ noise-dominant units.
    counts: :func:`mask_counts` of each file. A ratio with an empty denominator counts as 0, as in
    :func:`hit_minus_fa`.
    """
    total = {k: sum(c[k] for c in counts) for k in ("sq_err", "units", "hits", "speech_units", "false_alarms",
                                                    "noise_units")}  # fmt: skip
    if total["units"] == 0:
        return {"mse_pooled": math.nan, "hit_fa_pooled": math.nan}
    hit = total["hits"] / total["speech_units"] if total["speech_units"] else 0.0
    fa = total["false_alarms"] / total["noise_units"] if total["noise_units"] else 0.0
    return {"mse_pooled": total["sq_err"] / total["units"], "hit_fa_pooled": hit - fa}


def matched_lengths(reference: np.ndarray, processed: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Both signals cut to the shorter length when they differ by at most one frame (20 ms at ``sr`` Hz).

    Raises SpeechkernError when they differ by more: a processed file missing part of the utterance must not be
    scored on the part it kept.
    """
    n_ref, n_proc = len(reference), len(processed)
    tolerance = int(round(FRAME_S * sr))
    if abs(n_ref - n_proc) > tolerance:
        raise SpeechkernError(
            f"the processed signal has {n_proc} samples and the clean reference {n_ref} ({n_ref / sr:.3f} s vs "
            f"{n_proc / sr:.3f} s at {sr} Hz): more than one frame ({tolerance} samples) apart; score signals of the "
            "same utterance at the same sample rate"
        )
    n = min(n_ref, n_proc)
    return reference[:n], processed[:n]


def _note(problems: list[str] | None, why: str) -> float:
    if problems is not None:
        problems.append(why)
    return math.nan


def si_sdr(estimate: np.ndarray, reference: np.ndarray, sr: int = 16000, problems: list[str] | None = None) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), means removed.

    estimate, reference: (n_samples,) at ``sr`` Hz, lengths within one frame (see :func:`matched_lengths`).
    NaN (reason appended to ``problems``) when the reference or the estimate is silent: the ratio is 0/0 there.
    """
    ref, est = matched_lengths(np.asarray(reference), np.asarray(estimate), sr)
    est = est.astype(np.float64) - np.mean(est)
    ref = ref.astype(np.float64) - np.mean(ref)
    e_ref, e_est = np.dot(ref, ref), np.dot(est, est)
    # "constant", not "all zeros": a DC offset alone is silent too once the means are removed
    if e_ref <= 0.0:
        return _note(problems, "si_sdr: the clean reference is silent (constant, such as all zeros); SI-SDR is "
                               "undefined")  # fmt: skip
    if e_est <= 0.0:
        return _note(problems, "si_sdr: the processed signal is silent (constant, such as all zeros); SI-SDR is "
                               "undefined")  # fmt: skip
    target = (np.dot(est, ref) / e_ref) * ref
    noise = est - target
    return float(10.0 * np.log10(max(np.dot(target, target), 1e-20) / max(np.dot(noise, noise), 1e-20)))


def stoi(
    clean: np.ndarray, processed: np.ndarray, sr: int, extended: bool = False, problems: list[str] | None = None
) -> float:
    """Short-time objective intelligibility (pystoi), or its extended form, in [0, 1] (ESTOI may dip below 0).

    clean, processed: (n_samples,) at ``sr`` Hz, lengths within one frame. NaN (reason appended to ``problems``)
    when the clean reference is silent, or when fewer than 30 frames of 25.6 ms (hop 12.8 ms at 10 kHz) remain
    after pystoi removes the frames 40 dB below the loudest, i.e. under about 0.4 s of speech: pystoi would crash
    or return 1e-5 there.
    """
    from pystoi import stoi as _stoi

    name = "estoi" if extended else "stoi"
    ref, proc = matched_lengths(np.asarray(clean), np.asarray(processed), sr)
    if not np.any(ref):
        return _note(problems, f"{name}: the clean reference is silent (all zeros); STOI is undefined")
    too_short = (
        f"{name}: fewer than {STOI_MIN_FRAMES} frames of speech ({len(ref) / sr:.2f} s in all) remain after "
        "silence removal; STOI needs about 0.4 s of speech"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = float(_stoi(ref.astype(np.float64), proc.astype(np.float64), sr, extended=extended))
        except (ValueError, IndexError, np.exceptions.AxisError):  # pystoi on inputs of a frame or two
            return _note(problems, too_short)
    if any(issubclass(w.category, RuntimeWarning) and "frames" in str(w.message) for w in caught):
        return _note(problems, too_short)
    return value


def pesq(clean: np.ndarray, processed: np.ndarray, sr: int, mode: str = "wb") -> tuple[float, str]:
    """PESQ score and an empty string, or NaN and the reason it could not be scored.

    mode "wb": wide-band P.862.2 at 16 kHz; "nb": narrow-band P.862 at 8 kHz. Other input rates are resampled.
    Lengths must agree within one frame (SpeechkernError otherwise). The ``pesq`` C code runs in a forked child
    process where the system forks: it overruns a fixed table and crashes the process on signals of many
    utterances (30 s of 60 bursts does; so do 3-minute recordings), which gives NaN and the reason here.
    """
    from speechkern.audio import resample

    clean, processed = matched_lengths(np.asarray(clean), np.asarray(processed), sr)
    if not np.any(clean):
        return math.nan, "the clean reference is silent (all zeros)"
    rate = 16000 if mode == "wb" else 8000
    ref = resample(clean.astype(np.float32), sr, rate)
    deg = resample(processed.astype(np.float32), sr, rate)
    n = min(len(ref), len(deg))
    return _isolated(_pesq_score, rate, ref[:n], deg[:n], mode)


def _pesq_score(rate: int, ref: np.ndarray, deg: np.ndarray, mode: str) -> tuple[float, str]:
    from pesq import pesq as _pesq
    from pesq.cypesq import PesqError

    try:
        return float(_pesq(rate, ref, deg, mode)), ""
    except PesqError as err:  # no utterance detected, too short, ...
        return math.nan, f"{type(err).__name__}: {err}"


def _isolated(score, *args) -> tuple[float, str]:
    """``score(*args)`` (a ``(value, reason)`` pair) in a forked child, so that a crash of C code ends the child,
    not the caller: then NaN and the signal. Called directly where the system cannot fork."""
    import json
    import os
    import signal

    if not hasattr(os, "fork"):
        return score(*args)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, report through the pipe, leave without running the parent's clean-up
        try:
            os.close(read_end)
            try:
                value, why = score(*args)
                message = json.dumps([None if math.isnan(value) else value, why])
            except BaseException as err:  # noqa: BLE001 - reported to the parent as the reason
                message = json.dumps([None, f"{type(err).__name__}: {err}"])
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return math.nan, (f"the pesq library crashed ({name}) on this signal, as it does on recordings of many "
                          "utterances (minutes long); score shorter excerpts")  # fmt: skip
    value, why = json.loads(data) if data else (None, "the scoring process returned nothing")
    return (math.nan if value is None else float(value)), why


@dataclass
class SpeechScores:
    """Intelligibility and quality of one processed signal against the clean reference."""

    stoi: float
    estoi: float
    pesq: float
    pesq_nb: float
    si_sdr: float
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {"stoi": self.stoi, "estoi": self.estoi, "pesq": self.pesq, "pesq_nb": self.pesq_nb,
                "si_sdr": self.si_sdr}  # fmt: skip


def speech_scores(clean: np.ndarray, processed: np.ndarray, sr: int, narrowband: bool = True) -> SpeechScores:
    """STOI, ESTOI, wide- and narrow-band PESQ and SI-SDR of ``processed`` against ``clean``.

    clean, processed: (n_samples,) at ``sr`` Hz. Raises SpeechkernError when their lengths differ by more than one
    frame (20 ms); a score that is undefined for the input is NaN with its reason in ``problems`` (``pesq_nb`` is
    NaN, and not computed, without ``narrowband``).
    """
    matched_lengths(np.asarray(clean), np.asarray(processed), sr)
    pesq_wb, why_wb = pesq(clean, processed, sr, "wb")
    pesq_nb, why_nb = pesq(clean, processed, sr, "nb") if narrowband else (math.nan, "")
    problems = [f"pesq {m}: {why}" for m, why in (("wb", why_wb), ("nb", why_nb)) if why]
    return SpeechScores(
        stoi=stoi(clean, processed, sr, problems=problems),
        estoi=stoi(clean, processed, sr, extended=True, problems=problems),
        pesq=pesq_wb,
        pesq_nb=pesq_nb,
        si_sdr=si_sdr(processed, clean, sr, problems=problems),
        problems=problems,
    )
