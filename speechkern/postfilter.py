"""The clean-input guard: less masking where the model itself estimates that the recording is already clean."""

from __future__ import annotations

import functools
import math
import os
import tempfile

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from speechkern.features import FeatureConfig, component_dims
from speechkern.targets import TargetConfig

# The default for a model that carries no guard of its own: fitted and chosen for the shipped model v2 on the
# validation talkers of recipes/general (benchmarks/clean_guard.py, benchmarks/RESULTS.md): the calibration of the
# two SNR estimates, and the (low, high) calibrated SNR in dB between which the guard's weight rises from 0 to 1.
CALIBRATION = (0.041, 1.337, 0.226)
GUARD = (11.0, 12.0)
FLOOR_PERCENTILE = 10.0
WADA_SHAPE = 0.4  # the gamma shape of clean speech's amplitude distribution (Kim & Stern 2008)
WADA_RANGE = (-20.0, 100.0)  # dB: the SNRs WADA-SNR's table spans


class GuardConfig(BaseModel):
    """A model's clean-input guard (kept in its model file as ``clean_guard``): ``calibration`` = (c0, c1, c2) of
    :func:`calibrated_snr_db` and ``thresholds`` = (low, high) in dB of :func:`guard_weight`, both fitted for that
    model on validation talkers by benchmarks/clean_guard.py."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    calibration: tuple[float, float, float] = CALIBRATION
    thresholds: tuple[float, float] = GUARD
    wada_thresholds: tuple[float, float] | None = None  # (low, high) dB of WADA-SNR's ramp; None: not used

    @field_validator("calibration", "thresholds", "wada_thresholds")
    @classmethod
    def _finite(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and not all(math.isfinite(v) for v in value):
            raise ValueError(f"{list(value)}: expected finite numbers")
        return value

    @field_validator("thresholds", "wada_thresholds")
    @classmethod
    def _rising(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[1] > value[0]:
            raise ValueError(f"thresholds {list(value)}: the high one must exceed the low one")
        return value


def unit_energies(
    feats: np.ndarray, y: np.ndarray, feature_config: FeatureConfig, target_config: TargetConfig
) -> np.ndarray:
    """T-F energies (n_frames, n_units) of the mixture in the mask's domain, in the model's level-scaled units.

    Read back from the GF features (:func:`speechkern.features.extract`, ``feats`` (n_frames, base_dim)) when the
    mask is a cochleagram mask and the features hold GF, so no second filterbank pass is needed; otherwise
    computed from ``y`` (n_samples,) by :func:`speechkern.targets.tf_energies`.
    """
    fc = feature_config
    dims = component_dims(fc)
    if target_config.domain == "cochleagram" and "gf" in dims:
        start = sum(dims[name] for name in fc.components[: fc.components.index("gf")])
        gf = np.asarray(feats[:, start : start + dims["gf"]], dtype=np.float64)
        if fc.gf_compression == "power":
            return np.maximum(gf, 0.0) ** (1.0 / fc.gf_power)
        if fc.gf_compression == "cbrt":
            return np.maximum(gf, 0.0) ** 3
        return np.exp(gf)
    from speechkern.targets import tf_energies

    # the mask's own framing (targets.compute_target): STFT bins of frame_length, not the features' n_fft
    domain = target_config.domain
    return tf_energies(y, domain, fc.sr, fc.frame_length, fc.hop_length, fc.n_channels, fc.fmin, fc.fmax).T


def estimated_snr_db(mask: np.ndarray, energies: np.ndarray, beta: float = 0.5) -> float:
    """The recording's SNR in dB as the mask estimates it: 10·log10(Σ r·E / Σ (1 − r)·E) over all T-F units.

    mask, energies: (n_frames, n_units), the mask in [0, 1] and the mixture's T-F energies E. An IRM estimates
    (S/(S + N))^β (SPEC §5), so r = mask^(1/β) is the estimated speech share of each unit's energy (β = 0.5 by
    default; an IBM is its own share, β = 1). Returns +inf for an all-ones mask, -inf for an all-zeros one.
    """
    return _ratio_db(*_mask_shares(mask, energies, beta))


def _mask_shares(mask: np.ndarray, energies: np.ndarray, beta: float) -> tuple[float, float]:
    """(Σ r·E, Σ (1 − r)·E) of :func:`estimated_snr_db`: sums, so blocks of a recording add up."""
    r = np.clip(np.asarray(mask, dtype=np.float64), 0.0, 1.0) ** (1.0 / beta)
    e = np.asarray(energies, dtype=np.float64)
    return float(np.sum(r * e)), float(np.sum((1.0 - r) * e))


def _ratio_db(speech: float, noise: float) -> float:
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(speech) - 10.0 * np.log10(noise)) if speech > 0 or noise > 0 else -np.inf


def floor_snr_db(energies: np.ndarray, percentile: float = FLOOR_PERCENTILE, block: int = 65536) -> float:
    """The recording's SNR in dB against its noise floor: 10·log10(Σ max(E − N, 0) / Σ N) over all T-F units.

    energies: (n_frames, n_units) mixture T-F energies E (an array or a memory map: it is read a channel, then a
    block of ``block`` frames, at a time); N, per unit (channel), the ``percentile`` of its energies over the
    frames: the noise level in the quietest frames, a minimum-statistics noise estimate (Martin, "Noise power
    spectral density estimation based on optimal smoothing and minimum statistics", IEEE TSAP 2001, in its
    simplest, whole-recording form). Independent of the model; it overestimates the SNR of noise that pauses.
    """
    energies = energies if isinstance(energies, np.ndarray) else np.asarray(energies, dtype=np.float64)
    n_frames, n_units = energies.shape
    floor = np.array([np.percentile(np.asarray(energies[:, j], dtype=np.float64), percentile) for j in range(n_units)])
    speech = sum(float(np.sum(np.maximum(np.asarray(energies[a : a + block], dtype=np.float64) - floor, 0.0)))
                 for a in range(0, n_frames, block))  # fmt: skip
    return _ratio_db(speech, float(np.sum(floor)) * n_frames)


@functools.lru_cache(maxsize=1)
def _wada_table() -> tuple[np.ndarray, np.ndarray]:
    """(G, SNR dB) of WADA-SNR: G = log E|z| − E log|z| of z = x + n, x of gamma-distributed amplitude (shape
    :data:`WADA_SHAPE`, random sign) and n Gaussian at each SNR of :data:`WADA_RANGE` in 2-dB steps, from a
    seeded draw of 200 000 samples (0.1 s, once per process); G rises with the SNR, made strictly monotone here
    for interpolation."""
    rng = np.random.default_rng(0)
    n = 200_000
    speech = rng.gamma(WADA_SHAPE, 1.0, n) * rng.choice((-1.0, 1.0), n)
    speech /= np.sqrt(np.mean(speech**2))
    noise = rng.standard_normal(n)
    snrs = np.arange(WADA_RANGE[0], WADA_RANGE[1] + 1.0, 2.0)
    g = np.array([_wada_statistic(*_wada_sums(speech + noise * 10.0 ** (-snr / 20.0))) for snr in snrs])
    return np.maximum.accumulate(g) + 1e-9 * np.arange(len(g)), snrs


def _wada_sums(samples: np.ndarray) -> tuple[float, float, int]:
    """(Σ|x|, Σ log|x|, count) over the non-zero samples: sums, so blocks of a recording add up."""
    a = np.abs(np.asarray(samples, dtype=np.float64))
    a = a[a > 0]
    return float(a.sum()), float(np.log(a).sum()), int(a.size)


def _wada_statistic(abs_sum: float, log_sum: float, count: int) -> float:
    return math.log(abs_sum / count) - log_sum / count


def wada_snr_db(samples: np.ndarray | None = None, sums: tuple[float, float, int] | None = None) -> float:
    """WADA-SNR in dB of a waveform (n_samples,), or of its ``sums`` gathered block by block: the SNR at which
    speech of gamma-distributed amplitude in Gaussian noise has the waveform's G = log mean|x| − mean log|x|
    (Kim & Stern, "Robust signal-to-noise ratio estimation based on waveform amplitude distribution analysis",
    Interspeech 2008). Scale-free and independent of the model; clipped to :data:`WADA_RANGE`, its low end for a
    signal without non-zero samples."""
    abs_sum, log_sum, count = _wada_sums(samples) if sums is None else sums
    if count == 0 or abs_sum <= 0:
        return WADA_RANGE[0]
    g, snrs = _wada_table()
    return float(np.interp(_wada_statistic(abs_sum, log_sum, count), g, snrs))


class GuardEstimate:
    """A recording's two SNR estimates (:func:`estimated_snr_db`, :func:`floor_snr_db`) gathered block by block,
    so that the guard sees the whole recording however it was cut into blocks.

    ``add(mask, energies)`` takes the (n_frames, n_units) mask and T-F energies of consecutive, non-overlapping
    frames. The mask's estimate is a ratio of sums; the floor's percentile needs every frame's energies, which are
    kept in an anonymous temporary file (float64, :meth:`file_bytes`) in the folder ``dir`` (default: the system's
    temporary folder), so memory does not grow with the recording's length; ``dir="memory"`` keeps them in memory
    instead (for a recording that is in memory already: its energies take about as much again). ``beta``: the
    IRM's exponent (1 for binary masks). Use as a context manager, or ``close()``.
    """

    def __init__(self, beta: float = 0.5, dir: str | os.PathLike | None = None) -> None:  # noqa: A002 (tempfile's)
        self.beta = beta
        self.speech = self.noise = 0.0
        self.frames = 0
        self.units: int | None = None
        self.wada_sums = (0.0, 0.0, 0)
        self._blocks: list[np.ndarray] | None = [] if dir == "memory" else None
        self._file = None if dir == "memory" else tempfile.TemporaryFile(dir=dir)  # noqa: SIM115 (see close())

    @staticmethod
    def file_bytes(n_frames: int, n_units: int) -> int:
        """Bytes of the temporary file once ``n_frames`` frames of ``n_units`` units are added."""
        return 8 * n_frames * n_units

    def add(self, mask: np.ndarray, energies: np.ndarray, samples: np.ndarray | None = None) -> None:
        """One block: its mask and T-F energies (n_frames, n_units), and the waveform (n_samples,) of those frames
        at the model's rate, which WADA-SNR reads (:func:`wada_snr_db`)."""
        if samples is not None:
            self.wada_sums = tuple(a + b for a, b in zip(self.wada_sums, _wada_sums(samples), strict=True))
        e = np.ascontiguousarray(energies, dtype=np.float64)
        if self.units is not None and e.shape[1] != self.units:
            raise ValueError(f"clean-input guard: {e.shape[1]} units after {self.units}")
        speech, noise = _mask_shares(mask, e, self.beta)
        self.speech, self.noise = self.speech + speech, self.noise + noise
        self.units, self.frames = e.shape[1], self.frames + e.shape[0]
        if self._file is None:
            self._blocks.append(e)
        else:
            self._file.write(e.tobytes())

    def snr_estimates(self) -> tuple[float, float]:
        """(mask SNR, floor SNR) in dB over every frame added; (−inf, −inf) before any."""
        if not self.frames:
            return -np.inf, -np.inf
        if self._file is None:
            energies = np.concatenate(self._blocks)
        else:
            self._file.flush()
            energies = np.memmap(self._file, dtype=np.float64, mode="r", shape=(self.frames, self.units))
        return _ratio_db(self.speech, self.noise), floor_snr_db(energies)

    def weight(self, guard: GuardConfig | None = None) -> float:
        """The guard's weight w in [0, 1] (:func:`guard_weight`) with ``guard`` (a model's; default the module's);
        with its ``wada_thresholds``, the smaller of that and the ramp of the waveform's WADA-SNR."""
        guard = guard or GuardConfig()
        wada = None if guard.wada_thresholds is None else wada_snr_db(sums=self.wada_sums)
        return guard_weight(*self.snr_estimates(), guard.thresholds, guard.calibration, wada, guard.wada_thresholds)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> GuardEstimate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ramp(x: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear in between."""
    if not high > low:
        raise ValueError(f"clean-input guard: {high} must exceed {low}")
    return float(np.clip((x - low) / (high - low), 0.0, 1.0))


def calibrated_snr_db(mask_snr_db: float, floor_snr_db: float, calibration=CALIBRATION) -> float:
    """The recording's SNR in dB from its two estimates: c0 + c1·mask_snr_db + c2·floor_snr_db, the estimates
    clipped to [−20, 20] and [−10, 40] dB, ``calibration`` = (c0, c1, c2) the least-squares fit of the true SNR
    on validation mixtures (benchmarks/clean_guard.py). Each estimate alone is biased: the mask's saturates below
    10 dB (the model's masks stay below 1 on clean speech), the noise floor's is fooled by noise that pauses."""
    c0, c1, c2 = calibration
    return float(c0 + c1 * np.clip(mask_snr_db, -20.0, 20.0) + c2 * np.clip(floor_snr_db, -10.0, 40.0))


def guard_weight(
    mask_snr_db: float,
    floor_snr_db: float,
    thresholds: tuple[float, float] = GUARD,
    calibration=CALIBRATION,
    wada_snr: float | None = None,
    wada_thresholds: tuple[float, float] | None = None,
) -> float:
    """How much of the input to pass unmasked, in [0, 1]: ramp(calibrated_snr_db(...), low, high),
    ``thresholds`` = (low, high) in dB; with ``wada_thresholds``, the smaller of that and the ramp of
    ``wada_snr`` (:func:`wada_snr_db`) between them."""
    w = ramp(calibrated_snr_db(mask_snr_db, floor_snr_db, calibration), *thresholds)
    return w if wada_thresholds is None else min(w, ramp(wada_snr, *wada_thresholds))


def clean_weight(
    mask: np.ndarray,
    energies: np.ndarray,
    beta: float = 0.5,
    thresholds: tuple[float, float] = GUARD,
    calibration: tuple[float, float, float] = CALIBRATION,
) -> float:
    """The clean-input guard's weight w in [0, 1] for a recording with mask (n_frames, n_units) and mixture T-F
    energies (n_frames, n_units): :func:`guard_weight` of :func:`estimated_snr_db` and :func:`floor_snr_db`.

    The output is then ``w·input + (1 − w)·enhanced`` (:func:`blend`). A mask estimated on clean or nearly clean
    speech still attenuates parts of the speech (on held-out talkers at 20 dB SNR the shipped model v2 lost 0.006
    STOI and 4.4 dB SI-SDR), while the noise it could remove is already quiet: where the recording is estimated
    clean, masking cannot help. w = 1 returns the input unchanged, w = 0 the enhanced signal.
    """
    return guard_weight(estimated_snr_db(mask, energies, beta), floor_snr_db(energies), thresholds, calibration)


def blend(y: np.ndarray, enhanced: np.ndarray, w: float) -> np.ndarray:
    """``w·y + (1 − w)·enhanced`` (float32, the shape of ``y``); ``enhanced`` itself when w = 0.

    Blending the signals, not the masks, also returns what the mask cannot reach (below the filterbank's lowest
    channel, above its highest) in proportion, so w = 1 gives the input back exactly."""
    if w == 0.0:
        return enhanced
    return (w * np.asarray(y, dtype=np.float32) + (1.0 - w) * enhanced).astype(np.float32)


def guard_beta(target_config: TargetConfig) -> float:
    """The exponent that turns a model's mask into a speech share: the IRM's β, 1 for binary masks."""
    return target_config.beta if target_config.kind == "irm" else 1.0


def model_snr_estimates(
    mask: np.ndarray, feats: np.ndarray, y: np.ndarray, feature_config: FeatureConfig, target_config: TargetConfig
) -> tuple[float, float]:
    """(:func:`estimated_snr_db`, :func:`floor_snr_db`) in dB of a model's ``mask`` (n_frames, n_units) for the
    mixture ``y`` (n_samples,) with features ``feats`` (n_frames, base_dim), β from :func:`guard_beta`. What
    enhance's guard sees of a recording of one block (:class:`GuardEstimate` adds up longer ones), and what
    benchmarks/clean_guard.py fits it on."""
    energies = unit_energies(feats, y, feature_config, target_config)
    return estimated_snr_db(mask, energies, guard_beta(target_config)), floor_snr_db(energies)
