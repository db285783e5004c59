"""Feature sets computed on the mixture (SPEC §4), deltas, context windows and normalisation statistics.

Every feature set uses the project's centred framing (frame m centred at sample m·hop_length, zeros outside the
signal) and returns exactly n_frames = 1 + n_samples // hop_length rows, so features line up with the targets.

Feature definitions (default parameters: 16 kHz, 20 ms frames, 10 ms hop)
    gf         the 64-channel cochleagram (``speechkern.gammatone``), compressed: E^(1/15) by default
               (``gf_compression="power"``, ``gf_power``), cube root, or natural log.
    mfcc       31 coefficients: DCT-II (orthonormal) of the natural log of 64 Slaney mel-band energies
               (librosa filters, 0 Hz to sr/2) of the power spectrum; c0 included, no liftering.
    rasta_plp  13 values (model order 12), after Hermansky & Morgan and Ellis's ``rastaplp``: power spectrum →
               critical-band energies on the Bark scale (bands 1 Bark apart, Hermansky's asymmetric band shape)
               → natural log → RASTA band-pass along time (FIR Σ_k 0.1·k·x[t+k], k = −2…2, then the pole 0.94;
               centred, where the toolbox's rastafilt.m delays it by two frames: see :func:`rasta_filter`) → exp
               → equal-loudness weighting → cube root (intensity–loudness law) → all-pole model of order 12
               from the autocorrelation (inverse FFT of the auditory spectrum, Levinson–Durbin) → 13 cepstra
               (c0 = log prediction error) liftered by k^0.6.
    ams        15 values: amplitude-modulation spectrum of the full-band envelope, as the OSU PNL toolbox's
               ``extract_AMS_perChan.m`` (``ams_variant="toolbox"``, the default). Envelope = |y| low-passed and
               decimated by 4 (MATLAB's ``decimate(·, 4, 'fir')``: 31-tap Hamming FIR, delay compensated; 4 kHz
               envelope rate); per frame a symmetric Hann window of 32 ms (128 envelope samples) starting two
               hops (20 ms) before the frame centre, |FFT| of 256 points (15.625 Hz bins), then the toolbox's
               hand-set table of 15 modulation filters (3- or 4-bin triangles peaking from 31 to 375 Hz). No mean
               removal, no compression. The toolbox leaves its first frame zero; here it is computed like the
               others (the window hangs over the start, zeros outside the signal).
               ``ams_variant="centred"``: the earlier definition, a periodic Hann window centred on the frame,
               minus its window-weighted mean, 15 triangular windows with 17 corners evenly spaced from ams_fmin
               to ams_fmax (15.625–400 Hz), cube-root compressed (Kaiser decimation FIR).
    logmel     natural log of 64 mel-band energies (the same mel filters as mfcc).
    logpower   natural log of the |STFT|² with n_fft = frame_length (161 bins): the STFT-mask domain.
    gf_floor   the cochleagram's noise floor, compressed as gf (64 values): per channel, the minimum over a
               centred window of ``floor_window_s`` (1.5 s) of the energy smoothed over 5 frames, i.e. minimum
               statistics (Martin 2001) without bias correction. A frame-wise model gets the noise estimate that
               noise-aware training appends to its input (Seltzer, Yu & Wang 2013; Xu et al. 2014).
    complementary = ams + rasta_plp + mfcc + gf: 15 + 13 + 31 + 64 = 123 values per frame.

The auditory spectra (mfcc, rasta_plp, logmel) share one STFT with the frame zero-padded to ``n_fft`` = 512
points (the reference MFCC/PLP code pads 20 ms frames to the next power of two). Logs use a floor of 1e-10.

Deltas are regression deltas over ±``delta_width`` frames (edges repeated; ±4, the 9-frame window of the toolbox's
``deltas.m``, by default) appended after the base features ([F, ΔF]: 246 values for the complementary set); the
context window (±``context`` frames, edges repeated) is applied later by :func:`stack_context`, giving
:func:`input_dim` = 1230 for the defaults.

Level: before any feature, the waveform is scaled so that its RMS is ``level_dbfs`` (−26 dBFS by default); see
:func:`normalize_level`. Features, and so the estimated mask, do not depend on the recording's level; the mask
is applied to the unscaled mixture, so the output keeps the input's level.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from functools import lru_cache
from typing import Literal

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from speechkern.errors import SpeechkernError
from speechkern.progress import report

KINDS = ("gf", "mfcc", "rasta_plp", "ams", "logmel", "logpower", "gf_floor")
COMPLEMENTARY = ("ams", "rasta_plp", "mfcc", "gf")
LOG_FLOOR = 1e-10
MAX_LEVEL_GAIN_DB = 100.0  # near-silent input is not raised by more than this (digital silence stays silent)
RASTA_POLE = 0.94
RASTA_SETTLE_FRAMES = math.ceil(math.log(1e-3) / math.log(RASTA_POLE))  # the pole's memory decays to 1e-3: 112
PLP_LIFTER = 0.6


def _expand_kind(kind: str) -> tuple[str, ...]:
    parts: list[str] = []
    for raw in str(kind).lower().replace(" ", "").split("+"):
        name = raw.replace("-", "_")
        if name == "complementary":
            parts.extend(COMPLEMENTARY)
        elif name in KINDS:
            parts.append(name)
        else:
            raise ValueError(
                f"unknown feature set {raw!r} in {kind!r}: expected complementary or one of {', '.join(KINDS)}, "
                "or a '+'-joined combination such as 'gf+mfcc'"
            )
    if len(set(parts)) != len(parts):
        raise ValueError(f"feature set {kind!r} names a component twice")
    return tuple(parts)


class FeatureConfig(BaseModel):
    """Which features, and every signal parameter they depend on (JSON-serialisable, frozen, hashable).

    kind: "complementary" (= ams+rasta_plp+mfcc+gf), one of gf, mfcc, rasta_plp, ams, logmel, logpower, or a
    "+"-joined combination; level_dbfs: the RMS level (dBFS) the waveform is scaled to first; deltas: append
    regression deltas; context: frames on each side in the context window.
    sr (Hz), frame_length / hop_length (samples), n_channels / fmin / fmax (Hz) of the gammatone bank, n_fft of
    the auditory spectra, n_mels, n_mfcc, plp_order, the AMS parameters (modulation band edges in Hz of the
    "centred" variant, window in samples at sr, envelope decimation factor, variant) and delta_width (frames on
    each side of the delta regression).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: str = "complementary"
    # ≥ −100 dBFS (below 16-bit audio's noise floor): lower, the scaled waveform's spectra underflow float32 and
    # the features are zeros (−200 dBFS: 18 % of the values, −500 dBFS: 70 %), a model of nothing.
    level_dbfs: float = Field(-26.0, ge=-100.0, le=0.0)
    deltas: bool = True
    context: int = Field(2, ge=0)
    gf_compression: Literal["power", "cbrt", "log"] = "power"
    gf_power: float = Field(1.0 / 15.0, gt=0.0, le=1.0)
    sr: int = Field(16000, gt=0)
    frame_length: int = Field(320, ge=2)
    hop_length: int = Field(160, ge=1)
    n_channels: int = Field(64, ge=1)
    fmin: float = Field(50.0, gt=0.0)
    fmax: float = Field(8000.0, gt=0.0)
    n_fft: int = Field(512, ge=2)
    n_mels: int = Field(64, ge=1)
    n_mfcc: int = Field(31, ge=1)
    plp_order: int = Field(12, ge=1)
    ams_bands: int = Field(15, ge=1)
    ams_fmin: float = Field(15.625, ge=0.0)
    ams_fmax: float = Field(400.0, gt=0.0)
    ams_frame_length: int = Field(512, ge=8)
    ams_decimation: int = Field(4, ge=1)
    ams_variant: Literal["toolbox", "centred"] = "toolbox"
    delta_width: int = Field(4, ge=1)
    floor_window_s: float = Field(1.5, gt=0.0, le=10.0)

    @field_validator("kind")
    @classmethod
    def _valid_kind(cls, value: str) -> str:
        _expand_kind(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureConfig:
        # Each message names every key it involves as "key = value", so that a recipe error names the key given.
        nyquist = self.sr / 2.0
        if self.fmax > nyquist:
            raise ValueError(f"sr = {self.sr} Hz puts the Nyquist frequency at {nyquist:g} Hz, below the gammatone "
                             f"filterbank's fmax = {self.fmax:g} Hz; give fmax = {nyquist:g} or less, or a higher "
                             "sample rate")  # fmt: skip
        if self.fmin >= self.fmax:
            raise ValueError(f"fmin = {self.fmin:g} Hz is not below fmax = {self.fmax:g} Hz: the gammatone "
                             "filterbank spans fmin to fmax; choose fmin < fmax")  # fmt: skip
        if self.n_fft < self.frame_length:
            raise ValueError(f"n_fft = {self.n_fft} is shorter than frame_length = {self.frame_length}")
        if self.frame_length % 2:
            raise ValueError(f"frame_length = {self.frame_length}: expected an even number of samples")
        if self.hop_length >= self.frame_length:  # a model trained so was refused by enhance and evaluate
            raise ValueError(f"hop_length = {self.hop_length} is not below frame_length = {self.frame_length}: frames "
                             "must overlap, since the mask is spread between overlapping frames to resynthesise; "
                             f"choose a hop such as {self.frame_length // 2}")  # fmt: skip
        if "ams" in self.components:
            q = self.ams_decimation
            if self.hop_length % q:
                raise ValueError(f"hop_length = {self.hop_length} is not a multiple of ams_decimation = {q}: the AMS "
                                 "features decimate the envelope by it at every hop; choose a hop (or a decimation) "
                                 "that divides evenly")  # fmt: skip
            if self.ams_frame_length % (2 * q):
                raise ValueError(f"ams_frame_length = {self.ams_frame_length} is not a multiple of twice the "
                                 f"envelope's decimation (ams_decimation = {q}); choose a multiple of {2 * q}, such as "
                                 f"{max(1, round(self.ams_frame_length / (2 * q))) * 2 * q}")  # fmt: skip
            bin_hz = self.sr / self.ams_frame_length / 2
            if self.ams_variant == "toolbox" and self.ams_bands != len(AMS_TOOLBOX_FILTERS):
                raise ValueError(f"ams_bands = {self.ams_bands}: the toolbox's modulation filters are "
                                 f"{len(AMS_TOOLBOX_FILTERS)} bands; keep ams_bands = {len(AMS_TOOLBOX_FILTERS)}, "
                                 "or use ams_variant = 'centred'")  # fmt: skip
            if self.ams_variant == "toolbox" and bin_hz > 15.625:
                raise ValueError(f"ams_frame_length = {self.ams_frame_length} at sr = {self.sr} Hz gives envelope "
                                 f"spectra of {bin_hz:g} Hz bins (sr / (2·ams_frame_length)), coarser than the 15.625 "
                                 "Hz the toolbox's modulation filters need; give ams_frame_length = "
                                 f"{math.ceil(self.sr / 31.25 / (2 * q)) * 2 * q} or more, or use ams_variant = "
                                 "'centred'")  # fmt: skip
            nyquist_q = self.sr / q / 2.0
            if self.ams_fmax > nyquist_q:
                raise ValueError(f"ams_fmax = {self.ams_fmax:g} Hz is above the envelope's Nyquist frequency, "
                                 f"{nyquist_q:g} Hz (sr = {self.sr} Hz / ams_decimation = {q} / 2); give ams_fmax = "
                                 f"{nyquist_q:g} or less")  # fmt: skip
            if self.ams_fmin >= self.ams_fmax:
                raise ValueError(f"ams_fmin = {self.ams_fmin:g} Hz is not below ams_fmax = {self.ams_fmax:g} Hz; "
                                 "choose ams_fmin < ams_fmax")  # fmt: skip
        if "rasta_plp" in self.components and self.plp_order + 1 > _n_bark_bands(self.sr):
            bands = _n_bark_bands(self.sr)
            raise ValueError(f"plp_order = {self.plp_order} needs more Bark bands than sr = {self.sr} Hz audio gives "
                             f"({bands}); give plp_order = {bands - 1} or less")  # fmt: skip
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc = {self.n_mfcc} exceeds n_mels = {self.n_mels}; give n_mfcc = {self.n_mels} "
                             "or fewer")  # fmt: skip
        return self

    @property
    def components(self) -> tuple[str, ...]:
        """The feature sets in order, complementary expanded (e.g. ("ams", "rasta_plp", "mfcc", "gf"))."""
        return _expand_kind(self.kind)


def component_dims(config: FeatureConfig) -> dict[str, int]:
    """Values per frame of each component (without deltas)."""
    sizes = {
        "gf": config.n_channels,
        "gf_floor": config.n_channels,
        "mfcc": config.n_mfcc,
        "rasta_plp": config.plp_order + 1,
        "ams": config.ams_bands,
        "logmel": config.n_mels,
        "logpower": config.frame_length // 2 + 1,
    }
    return {name: sizes[name] for name in config.components}


def base_dim(config: FeatureConfig) -> int:
    """Values per frame returned by :func:`extract` (deltas included): 123, or 246 with deltas, by default."""
    return sum(component_dims(config).values()) * (2 if config.deltas else 1)


def input_dim(config: FeatureConfig) -> int:
    """Model input size: base_dim·(2·context + 1) (1230 for the defaults)."""
    return base_dim(config) * (2 * config.context + 1)


# ----------------------------------------------------------------------------------------------------------------
# filterbanks and matrices (cached per parameter set)


def hz_to_bark(f_hz: np.ndarray | float) -> np.ndarray | float:
    """Bark scale of PLP: 6·asinh(f/600)."""
    return 6.0 * np.arcsinh(np.asarray(f_hz, dtype=np.float64) / 600.0)


def bark_to_hz(z: np.ndarray | float) -> np.ndarray | float:
    """Inverse of :func:`hz_to_bark`."""
    return 600.0 * np.sinh(np.asarray(z, dtype=np.float64) / 6.0)


def _n_bark_bands(sr: int) -> int:
    return int(math.ceil(float(hz_to_bark(sr / 2.0)))) + 1


@lru_cache(maxsize=8)
def bark_filterbank(sr: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Critical-band weights (n_bands, n_fft // 2 + 1) and band centres (Hz); bands 0…Bark(sr/2) evenly spaced.

    Band shape on the Bark axis (Δ = Bark(bin) − centre): 1 within ±0.5 Bark, rising 10 dB/Bark below and
    falling 25 dB/Bark above (Hermansky 1990 as implemented in Ellis's ``fft2barkmx``).
    """
    n_bands = _n_bark_bands(sr)
    centres = np.linspace(0.0, float(hz_to_bark(sr / 2.0)), n_bands)
    delta = hz_to_bark(np.fft.rfftfreq(n_fft, 1.0 / sr))[None, :] - centres[:, None]
    weights = 10.0 ** np.minimum(0.0, np.minimum(delta + 0.5, -2.5 * (delta - 0.5)))
    return weights, bark_to_hz(centres)


def equal_loudness(f_hz: np.ndarray) -> np.ndarray:
    """Hermansky's equal-loudness pre-emphasis (power weights) at ``f_hz``."""
    fsq = np.asarray(f_hz, dtype=np.float64) ** 2
    return (fsq / (fsq + 1.6e5)) ** 2 * ((fsq + 1.44e6) / (fsq + 9.61e6))


@lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised mel filters (n_mels, n_fft // 2 + 1), 0 Hz to sr/2 (librosa)."""
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sr / 2.0).astype(np.float64)


@lru_cache(maxsize=8)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (n_out, n_in): rows are the first n_out basis vectors."""
    return scipy.fft.dct(np.eye(n_in), type=2, norm="ortho", axis=0)[:n_out]


# The toolbox's active modulation filter table (AMS_init_FFT.m): per band, the first 0-based bin of the 256-point
# envelope FFT (15.625 Hz bins at a 4 kHz envelope rate) and the weights from there.
AMS_TOOLBOX_BIN_HZ = 15.625
AMS_TOOLBOX_FILTERS: tuple[tuple[int, tuple[float, ...]], ...] = (
    (1, (0.25, 0.5, 0.25)), (2, (0.1, 0.4, 0.4, 0.1)), (3, (0.1, 0.4, 0.4, 0.1)), (4, (0.25, 0.5, 0.25)),
    (4, (0.1, 0.4, 0.4, 0.1)), (5, (0.1, 0.4, 0.4, 0.1)), (6, (0.1, 0.4, 0.4, 0.1)), (8, (0.25, 0.5, 0.25)),
    (9, (0.1, 0.4, 0.4, 0.1)), (11, (0.25, 0.5, 0.25)), (13, (0.25, 0.5, 0.25)), (15, (0.25, 0.5, 0.25)),
    (17, (0.25, 0.5, 0.25)), (20, (0.25, 0.5, 0.25)), (23, (0.25, 0.5, 0.25)),
)  # fmt: skip


@lru_cache(maxsize=8)
def ams_toolbox_filterbank(n_bins: int, bin_hz: float = AMS_TOOLBOX_BIN_HZ) -> np.ndarray:
    """The toolbox's hand-set modulation filters as weights (n_bins, 15) over envelope-FFT bins of ``bin_hz`` Hz.

    Band centres 31.25, 54.7, 70.3, 78.1, 85.9, 101.6, 117.2, 140.6, 164.1, 187.5, 218.8, 250, 281.3, 328.1 and
    375 Hz (OSU PNL toolbox, ``AMS_init_FFT.m``, the table that is not commented out). At its 15.625 Hz bins
    (4 kHz envelope, 256-point FFT) these are the table's weights; on a finer grid (e.g. 8 kHz audio) each filter
    is the same piecewise-linear shape in Hz, rescaled to sum to 1 as the table's rows do.
    """
    if bin_hz > AMS_TOOLBOX_BIN_HZ:
        raise ValueError(f"AMS bins of {bin_hz:g} Hz are coarser than the toolbox filters' {AMS_TOOLBOX_BIN_HZ} Hz")
    f = np.arange(n_bins) * bin_hz
    weights = np.zeros((n_bins, len(AMS_TOOLBOX_FILTERS)))
    for band, (first, taps) in enumerate(AMS_TOOLBOX_FILTERS):
        xp = np.arange(first - 1, first + len(taps) + 1) * AMS_TOOLBOX_BIN_HZ
        weights[:, band] = np.interp(f, xp, [0.0, *taps, 0.0], left=0.0, right=0.0)
        weights[:, band] /= weights[:, band].sum()
    return weights


@lru_cache(maxsize=8)
def ams_filterbank(n_bins: int, bin_hz: float, n_bands: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular modulation-frequency windows (n_bins, n_bands); corners evenly spaced from fmin to fmax Hz."""
    corners = np.linspace(fmin, fmax, n_bands + 2)
    f = np.arange(n_bins) * bin_hz
    lo, mid, hi = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    tri = np.maximum(0.0, np.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
    return tri.T


@lru_cache(maxsize=8)
def _decimation_taps(q: int, variant: str = "centred") -> np.ndarray:
    """Low-pass FIR for decimation by q: MATLAB decimate's fir1(30, 1/q) (Hamming) for the toolbox variant, else
    the Kaiser design of scipy.signal.resample_poly."""
    if variant == "toolbox":
        return scipy.signal.firwin(31, 1.0 / q)
    half = 10 * q
    return scipy.signal.firwin(2 * half + 1, 1.0 / q, window=("kaiser", 5.0))


# ----------------------------------------------------------------------------------------------------------------
# components (torch tensors in, frames × values out)


def _compress(energy: torch.Tensor, how: str, power: float) -> torch.Tensor:
    if how == "power":
        return energy.clamp_min(0.0) ** power
    if how == "cbrt":
        return energy.clamp_min(0.0) ** (1.0 / 3.0)
    return torch.log(energy.clamp_min(LOG_FLOOR))


def gammatone_features(coch: np.ndarray | torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """GF (n_frames, n_channels) from a cochleagram (n_channels, n_frames)."""
    coch = torch.as_tensor(coch)
    return _compress(coch, config.gf_compression, config.gf_power).T.float()


def noise_floor(energy: np.ndarray | torch.Tensor, window: int, smooth: int = 5) -> np.ndarray:
    """Minimum statistics of T-F energies (n_channels, n_frames) → the noise floor, same shape, float64.

    Each channel's energy is averaged over ``smooth`` frames, then its minimum taken over a centred window of
    ``window`` frames (edges repeated), as Martin's (2001) minimum statistics without the bias correction, which
    a learned model does not need. O(n_frames) per channel (scipy.ndimage's running filters)."""
    e = torch.as_tensor(energy).detach().cpu().double().numpy()
    smoothed = scipy.ndimage.uniform_filter1d(e, size=smooth, axis=-1, mode="nearest")
    return scipy.ndimage.minimum_filter1d(smoothed, size=window, axis=-1, mode="nearest")


def mfcc_from_power(power: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """MFCC (n_frames, n_mfcc) from a power spectrogram (n_fft // 2 + 1, n_frames)."""
    mel = _mel(power, config)
    basis = torch.as_tensor(dct_matrix(config.n_mfcc, config.n_mels), dtype=power.dtype, device=power.device)
    return (basis @ torch.log(mel.clamp_min(LOG_FLOOR))).T


def logmel_from_power(power: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Log mel energies (n_frames, n_mels) from a power spectrogram (n_fft // 2 + 1, n_frames)."""
    return torch.log(_mel(power, config).clamp_min(LOG_FLOOR)).T


def _mel(power: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    fb = torch.as_tensor(mel_filterbank(config.sr, config.n_fft, config.n_mels), dtype=power.dtype)
    return fb.to(power.device) @ power


def levinson(r: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Levinson–Durbin recursion for many autocorrelation rows at once.

    r: (n, ≥ order + 1) autocorrelations. Returns the prediction polynomials a (n, order + 1) with a[:, 0] = 1
    and the prediction error powers e (n,).
    """
    r = np.asarray(r, dtype=np.float64)
    n = r.shape[0]
    a = np.zeros((n, order + 1))
    a[:, 0] = 1.0
    e = np.maximum(r[:, 0], 1e-300)
    for i in range(1, order + 1):  # loop over the model order, vectorised over frames
        acc = r[:, i] + np.einsum("nj,nj->n", a[:, 1:i], r[:, i - 1 : 0 : -1])
        k = -acc / e
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        e = np.maximum(e * (1.0 - k * k), 1e-300 + 1e-12 * r[:, 0])
    return a, e


def lpc_to_cepstrum(a: np.ndarray, e: np.ndarray, n_ceps: int) -> np.ndarray:
    """Cepstrum (n, n_ceps) of the all-pole model e / |A|²: c0 = log e, then the LPC→cepstrum recursion."""
    n, p1 = a.shape
    c = np.zeros((n, n_ceps))
    c[:, 0] = np.log(e)
    for k in range(1, n_ceps):
        acc = np.zeros(n)
        for m in range(1, k):
            if m < p1:
                acc += (k - m) * a[:, m] * c[:, k - m]
        c[:, k] = -((a[:, k] if k < p1 else 0.0) + acc / k)
    return c


def rasta_filter(log_bands: np.ndarray) -> np.ndarray:
    """RASTA band-pass along frames of log critical-band energies (n_bands, n_frames), centred (no delay).

    FIR Σ_k 0.1·k·x[t+k], k = −2…2 (edges repeated), then the pole 0.94 (Hermansky & Morgan 1994). The toolbox's
    ``rastafilt.m`` runs the same filter causally, so its output at frame t + 2 is this output at frame t (once
    the differing start-up has decayed through the pole); speechkern centres it so that RASTA-PLP, like every other
    feature set and the target, describes the frame it is stored at (SPEC §3–4: one 20 ms / 10 ms frame grid).
    """
    padded = np.pad(log_bands, ((0, 0), (2, 2)), mode="edge")
    t = log_bands.shape[1]
    fir = sum(0.1 * k * padded[:, 2 + k : 2 + k + t] for k in (-2, -1, 1, 2))
    return scipy.signal.lfilter([1.0], [1.0, -RASTA_POLE], fir, axis=1)


def rasta_plp_from_power(power: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """RASTA-PLP cepstra (n_frames, plp_order + 1) from a power spectrogram (n_fft // 2 + 1, n_frames)."""
    weights, centres_hz = bark_filterbank(config.sr, config.n_fft)
    bands = (torch.as_tensor(weights, dtype=power.dtype, device=power.device) @ power).double().cpu().numpy()
    rasta = rasta_filter(np.log(np.maximum(bands, LOG_FLOOR)))
    aud = np.exp(rasta) * equal_loudness(centres_hz)[:, None]
    aud = np.cbrt(aud)
    aud[0], aud[-1] = aud[1], aud[-2]  # edge bands are unreliable (zero loudness weight at 0 Hz)
    n_bands = aud.shape[0]
    autocorr = np.fft.irfft(aud.T, n=2 * (n_bands - 1), axis=1)[:, : config.plp_order + 1]
    a, e = levinson(autocorr, config.plp_order)
    ceps = lpc_to_cepstrum(a, e, config.plp_order + 1)
    ceps[:, 1:] *= np.arange(1, config.plp_order + 1) ** PLP_LIFTER
    return torch.as_tensor(ceps, dtype=power.dtype, device=power.device)


def ams_features(y: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """AMS (n_frames, ams_bands) of a waveform tensor (n_samples,) (definition in the module docstring)."""
    import torch.nn.functional as F

    toolbox = config.ams_variant == "toolbox"
    q = config.ams_decimation
    n = y.shape[-1]
    m = 1 + n // config.hop_length
    taps = torch.as_tensor(_decimation_taps(q, config.ams_variant), dtype=y.dtype, device=y.device)
    half = (len(taps) - 1) // 2
    rect = y.abs().view(1, 1, -1)
    if toolbox and n > half:  # MATLAB's decimate extends the ends by odd reflection
        before = 2 * rect[..., :1] - torch.flip(rect[..., 1 : half + 1], [-1])
        after = 2 * rect[..., -1:] - torch.flip(rect[..., n - 1 - half : n - 1], [-1])
        rect = torch.cat([before, rect, after], -1)
    else:
        rect = F.pad(rect, (half, half))
    env = F.conv1d(rect, taps.view(1, 1, -1), stride=q).view(-1)  # envelope sample i is input sample i·q
    width = config.ams_frame_length // q
    hop = config.hop_length // q
    lead = 2 * hop if toolbox else width // 2  # envelope samples of the window before the frame centre
    total = (m - 1) * hop + width
    padded = F.pad(env, (lead, max(0, total - lead - env.shape[-1])))
    frames = padded.unfold(0, width, hop)[:m]  # (m, width), frame m's window starts at envelope m·hop − lead
    if toolbox:
        win = torch.hann_window(width, periodic=False, dtype=y.dtype, device=y.device)
        spectrum = torch.fft.rfft(frames * win, n=2 * width).abs()
        weights = ams_toolbox_filterbank(width + 1, config.sr / q / (2 * width))
        return spectrum @ torch.as_tensor(weights, dtype=y.dtype, device=y.device)
    win = torch.hann_window(width, periodic=True, dtype=y.dtype, device=y.device)
    mean = (frames * win).sum(-1, keepdim=True) / win.sum()
    spectrum = torch.fft.rfft((frames - mean) * win, n=2 * width).abs()
    tri = ams_filterbank(width + 1, config.sr / q / (2 * width), config.ams_bands, config.ams_fmin, config.ams_fmax)
    return (spectrum @ torch.as_tensor(tri, dtype=y.dtype, device=y.device)).clamp_min(0.0) ** (1.0 / 3.0)


def _power(y: torch.Tensor, config: FeatureConfig, n_fft: int) -> torch.Tensor:
    from speechkern.stft import stft_tensor

    spec = stft_tensor(y, config.frame_length, config.hop_length, n_fft)
    return spec.real**2 + spec.imag**2


@contextmanager
def _torch_threads(device: str, n: int = 1):
    """Run small CPU tensor ops on one thread: OpenMP teams on a busy 2-core machine measured 30× slower."""
    if not str(device).startswith("cpu") or torch.get_num_threads() <= n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def level_gain(y: np.ndarray, level_dbfs: float) -> float:
    """The factor that scales ``y`` (n_samples,) to an RMS of ``level_dbfs`` dB relative to full scale (1.0).

    Capped at +100 dB so that near-silent input is not raised to the reference; 1.0 for an all-zero signal.
    For any a > 0 (within the cap), ``level_gain(a * y) == level_gain(y) / a``.
    """
    return gain_for_rms(float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))), level_dbfs)


def gain_for_rms(rms: float, level_dbfs: float) -> float:
    """The gain :func:`level_gain` gives a signal of RMS ``rms`` (full scale 1.0)."""
    if rms == 0.0:
        return 1.0
    return min(10.0 ** (level_dbfs / 20.0) / rms, 10.0 ** (MAX_LEVEL_GAIN_DB / 20.0))


def normalize_level(y: np.ndarray, level_dbfs: float) -> np.ndarray:
    """``y`` scaled by :func:`level_gain` to an RMS of ``level_dbfs`` dBFS (same shape and dtype)."""
    return (y * level_gain(y, level_dbfs)).astype(y.dtype, copy=False)


def reach_s(config: FeatureConfig) -> float:
    """How far (seconds) on each side a frame's model input looks: the context window and deltas, on top of the
    furthest-reaching component (the noise floor's window and smoothing; RASTA's pole until it has decayed to
    1e-3, 112 frames), and one frame. Blocks enhanced apart need at least this much margin."""
    reach = {"gf_floor": _floor_frames(config) // 2 + 2, "rasta_plp": RASTA_SETTLE_FRAMES + 2}
    frames = config.context + (config.delta_width if config.deltas else 0) + 2
    frames += max((reach.get(name, 0) for name in config.components), default=0)
    return (frames * config.hop_length + config.frame_length) / config.sr


def _floor_frames(config: FeatureConfig) -> int:
    return max(1, round(config.floor_window_s * config.sr / config.hop_length))


def extract(
    y: np.ndarray,
    config: FeatureConfig | None = None,
    device: str = "cpu",
    n_threads: int | None = None,
    gain: float | None = None,
) -> np.ndarray:
    """Per-frame features of waveform ``y`` (at config.sr Hz) → float32 (n_frames, base_dim(config)).

    The waveform is first scaled by ``gain``, by default :func:`level_gain` to config.level_dbfs, so the
    features do not depend on the input level (a recording cut in pieces passes the whole one's gain). Deltas
    are included when config.deltas; the context window is not (see :func:`stack_context`).
    n_threads: CPU threads of the gammatone filtering (default: :func:`speechkern.gammatone.default_threads`,
    i.e. the available CPUs capped by torch.get_num_threads(): one in a worker that pinned torch to one thread).
    """
    from speechkern.gammatone import default_threads

    config = config or FeatureConfig()
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise SpeechkernError(f"features need a non-empty mono waveform (n_samples,), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise SpeechkernError("the waveform holds NaN or infinite samples")
    y = y * (level_gain(y, config.level_dbfs) if gain is None else gain)
    n_threads = n_threads or default_threads()  # read before torch is pinned to one thread below
    with _torch_threads(device):
        feats = _extract(y, config, device, n_threads)
    expected = 1 + len(y) // config.hop_length
    if feats.shape[0] != expected:  # a broken invariant, not a user error
        raise AssertionError(f"feature frames {feats.shape[0]} != {expected}")
    if config.deltas:
        feats = add_deltas(feats, config.delta_width)
    return np.ascontiguousarray(feats, dtype=np.float32)


def _extract(y: np.ndarray, config: FeatureConfig, device: str, n_threads: int | None) -> np.ndarray:
    from speechkern.gammatone import cochleagram

    wav = torch.as_tensor(y, dtype=torch.float32, device=device)
    aud_power = coch = None
    parts = []
    for name in config.components:
        if name in ("mfcc", "rasta_plp", "logmel") and aud_power is None:
            aud_power = _power(wav, config, config.n_fft)
        if name in ("gf", "gf_floor") and coch is None:
            coch = cochleagram(
                y,
                config.sr,
                config.n_channels,
                config.fmin,
                config.fmax,
                config.frame_length,
                config.hop_length,
                device=device,
                n_threads=n_threads,
            )
        if name == "gf":
            parts.append(gammatone_features(coch, config).to(device))
        elif name == "gf_floor":
            parts.append(gammatone_features(noise_floor(coch, _floor_frames(config)), config).to(device))
        elif name == "mfcc":
            parts.append(mfcc_from_power(aud_power, config))
        elif name == "rasta_plp":
            parts.append(rasta_plp_from_power(aud_power, config))
        elif name == "logmel":
            parts.append(logmel_from_power(aud_power, config))
        elif name == "ams":
            parts.append(ams_features(wav, config))
        elif name == "logpower":
            lin_power = _power(wav, config, config.frame_length)
            parts.append(torch.log(lin_power.clamp_min(LOG_FLOOR)).T)
    return torch.cat([p.float() for p in parts], dim=1).cpu().numpy()


# ----------------------------------------------------------------------------------------------------------------
# deltas, context windows


def deltas(features: np.ndarray, width: int = 4) -> np.ndarray:
    """Regression deltas along frames: Δ_t = Σ_{k=1..width} k·(F_{t+k} − F_{t−k}) / (2·Σ k²), edges repeated.

    features: (n_frames, dim); width: frames on each side (4: the 9-frame window of the OSU toolbox's
    ``deltas.m``, Ellis's rastamat). Equals librosa.feature.delta(width=2·width+1) away from the edges, and
    ``deltas.m`` everywhere up to its missing 1/(2·Σ k²) (= 1/60 for width 4), a constant scale that the
    per-dimension feature normalisation removes.
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise SpeechkernError(f"deltas expect (n_frames, dim) features, got shape {f.shape}")
    if width < 1:
        raise SpeechkernError(f"delta width {width}: expected at least 1 frame on each side")
    t = f.shape[0]
    padded = np.pad(f.astype(np.float64), ((width, width), (0, 0)), mode="edge")
    out = np.zeros(f.shape, dtype=np.float64)
    for k in range(1, width + 1):
        out += k * (padded[width + k : width + k + t] - padded[width - k : width - k + t])
    return (out / (2.0 * sum(k * k for k in range(1, width + 1)))).astype(f.dtype, copy=False)


def add_deltas(features: np.ndarray, width: int = 4) -> np.ndarray:
    """[F, ΔF]: features (n_frames, dim) with their regression deltas appended → (n_frames, 2·dim)."""
    return np.concatenate([features, deltas(features, width)], axis=1)


def stack_context(features: np.ndarray, context: int = 2) -> np.ndarray:
    """Context window: row t = [F_{t−c}, …, F_t, …, F_{t+c}] → (n_frames, dim·(2c + 1)).

    Frames beyond the edges repeat the first/last frame (a zero frame would be an impossible feature value
    once features are normalised).
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise SpeechkernError(f"stack_context expects (n_frames, dim) features, got shape {f.shape}")
    if context < 0:
        raise SpeechkernError(f"context {context}: expected >= 0 frames on each side")
    if context == 0:
        return f.copy()
    padded = np.pad(f, ((context, context), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * context + 1, axis=0)  # (T, dim, 2c+1)
    return np.ascontiguousarray(windows.transpose(0, 2, 1)).reshape(f.shape[0], -1)


# ----------------------------------------------------------------------------------------------------------------
# normalisation statistics


class FeatureStats:
    """Per-dimension mean and standard deviation over training frames, accumulated in float64.

    Either give ``mean`` and ``std`` (e.g. read back from a model file), call :meth:`fit` on the training
    features, or stream: ``update(block)`` for each (n_frames, dim) block, then ``finalize()``. Blocks are merged
    with Chan et al.'s pairwise update (numerically stable). Dimensions whose std is below ``min_std`` get std = 1
    (left unscaled) so constant features do not blow up.
    """

    def __init__(
        self,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        *,
        count: int = 0,
        min_std: float = 1e-6,
    ) -> None:
        self.min_std = float(min_std)
        self.count = int(count)
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        if (mean is None) != (std is None):
            raise SpeechkernError("feature statistics need both mean and std, or neither")
        if mean is not None:
            mean = np.asarray(mean, dtype=np.float64).reshape(-1)
            std = np.asarray(std, dtype=np.float64).reshape(-1)
            if mean.shape != std.shape or not np.all(std > 0) or not np.all(np.isfinite(mean)):
                raise SpeechkernError(
                    f"feature statistics are malformed: mean {mean.shape}, std {std.shape}; std must be > 0"
                )
            self.mean, self.std = mean, std
            self._mean, self._m2 = mean.copy(), std**2 * self.count

    @classmethod
    def fit(cls, features: np.ndarray | Iterable[np.ndarray], min_std: float = 1e-6) -> FeatureStats:
        """Statistics of training features: one (n_frames, dim) array or an iterable of such blocks."""
        stats = cls(min_std=min_std)
        blocks = [features] if isinstance(features, np.ndarray) else features
        for block in blocks:
            stats.update(block)
        return stats.finalize()

    @property
    def dim(self) -> int | None:
        """Feature dimension, once known."""
        ref = self.mean if self.mean is not None else self._mean
        return None if ref is None else int(ref.shape[0])

    def update(self, batch: np.ndarray) -> FeatureStats:
        """Add the frames of ``batch`` (n_frames, dim)."""
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim != 2:
            raise SpeechkernError(f"feature statistics expect (n_frames, dim) arrays, got shape {x.shape}")
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise SpeechkernError(f"feature block of dimension {x.shape[1]} after blocks of {self._mean.shape[0]}")
        n_b = x.shape[0]
        if n_b == 0:
            return self
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        if self._mean is None or self.count == 0:
            self._mean, self._m2, self.count = mean_b, m2_b, n_b
            return self
        n_a = self.count
        total = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + delta**2 * (n_a * n_b / total)
        self.count = total
        return self

    def finalize(self) -> FeatureStats:
        """Compute ``mean`` and ``std`` (population standard deviation) from the frames added so far."""
        if self._mean is None or self.count == 0:
            raise SpeechkernError("no training frames were added to the feature statistics")
        std = np.sqrt(self._m2 / self.count)
        self.mean = self._mean.copy()
        self.std = np.where(std < self.min_std, 1.0, std)
        return self

    def normalize(self, features: np.ndarray) -> np.ndarray:
        """(F − mean) / std, float32; works on context-stacked features too (stats tiled over the window)."""
        if self.mean is None or self.std is None:
            raise SpeechkernError("feature statistics are not finalised; call finalize() after update()")
        f = np.asarray(features, dtype=np.float64)
        dim = self.mean.shape[0]
        if f.shape[-1] % dim:
            raise SpeechkernError(f"features of dimension {f.shape[-1]} do not match statistics of dimension {dim}")
        reps = f.shape[-1] // dim
        return ((f - np.tile(self.mean, reps)) / np.tile(self.std, reps)).astype(np.float32)

    def to_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Arrays for a safetensors file: {prefix}mean, {prefix}std (float64), {prefix}count (int64, shape (1,))."""
        if self.mean is None or self.std is None:
            self.finalize()
        return {
            f"{prefix}mean": np.asarray(self.mean, dtype=np.float64),
            f"{prefix}std": np.asarray(self.std, dtype=np.float64),
            f"{prefix}count": np.array([self.count], dtype=np.int64),
        }

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> FeatureStats:
        """Inverse of :meth:`to_dict` (accepts numpy arrays or torch tensors; ``count`` is optional)."""
        try:
            mean, std = arrays[f"{prefix}mean"], arrays[f"{prefix}std"]
        except KeyError as err:
            raise SpeechkernError(f"feature statistics: array {err} missing from the model file") from None
        count = int(np.asarray(arrays.get(f"{prefix}count", [0])).reshape(-1)[0])
        return cls(np.asarray(mean), np.asarray(std), count=count)


# ----------------------------------------------------------------------------------------------------------------
# batches


def _init_worker() -> None:
    torch.set_num_threads(1)


def _extract_single_thread(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    return extract(y, config, "cpu", n_threads=1)


_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _process_pool(n_jobs: int) -> ProcessPoolExecutor:
    """A process pool kept for the life of the process (workers start once; forkserver avoids forking torch)."""
    global _pool, _pool_size
    if _pool is None or _pool_size != n_jobs:
        if _pool is not None:
            _pool.shutdown(cancel_futures=True)
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            ctx.set_forkserver_preload(["speechkern.features", "librosa"])
        _pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_init_worker)
        _pool_size = n_jobs
    return _pool


def extract_batch(
    signals: Sequence[np.ndarray],
    config: FeatureConfig | None = None,
    n_jobs: int | None = 2,
    device: str = "cpu",
    backend: Literal["threads", "processes"] = "threads",
) -> list[np.ndarray]:
    """Features of many utterances (each as :func:`extract`), in input order.

    On CPU the utterances are shared among ``n_jobs`` workers, each computing one utterance on one thread:
    ``backend="threads"`` (default) uses threads of this process — the filtering, FFTs and array maths release
    the GIL — and pins torch to one intra-op thread while the batch runs; ``"processes"`` uses worker processes
    (forkserver; the calling script needs the usual ``if __name__ == "__main__":`` guard). See
    benchmarks/feature_speed.py for the measured comparison. On a GPU the utterances run one after another.
    Progress is reported under the task "features".
    """
    config = config or FeatureConfig()
    total = len(signals)
    n_jobs = max(1, int(n_jobs or os.cpu_count() or 1))
    if backend not in ("threads", "processes"):
        raise SpeechkernError(f"feature backend {backend!r}: expected 'threads' or 'processes'")
    results: list[np.ndarray | None] = [None] * total
    if not str(device).startswith("cpu") or n_jobs == 1 or total <= 1:
        for i, y in enumerate(signals):
            results[i] = extract(y, config, device, n_threads=None if n_jobs > 1 else 1)
            report("features", i + 1, total, "features")
        return results  # type: ignore[return-value]
    if backend == "processes":
        pool = _process_pool(n_jobs)
        futures = {pool.submit(_extract_single_thread, np.asarray(y), config): i for i, y in enumerate(signals)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            report("features", done, total, "features")
        return results  # type: ignore[return-value]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            futures = {pool.submit(_extract_single_thread, y, config): i for i, y in enumerate(signals)}
            for done, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                report("features", done, total, "features")
    finally:
        torch.set_num_threads(before)
    return results  # type: ignore[return-value]
