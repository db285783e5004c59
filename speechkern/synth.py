"""Speech-like utterances from synthetic talkers, for the embedded demo recipe (no download, no corpus).

A source-filter (Klatt-style) synthesiser. The voice source is a Rosenberg glottal pulse train whose pitch follows
a phrase contour (declination, pitch accents, a final fall or rise, slow wander, per-cycle jitter and shimmer);
it goes, with aspiration noise, through a cascade of five time-varying formant resonators. Fricatives and plosive
bursts are band-passed noise added in parallel. Random CV/CVC syllables form words and phrases separated by
pauses, so the output has the 3-6 Hz energy modulation and the silent gaps of real speech.

Levels: every utterance is scaled to an RMS of :data:`RMS_LEVEL` (0.05, about -26 dBFS) over its whole length,
with a white noise floor 60 dB below that so log-spectral features never see exact zeros. An utterance shorter
than about 0.3 s has room for no syllable and holds only that floor. 60 s of speech take about 0.4 s on one core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal
from scipy.ndimage import gaussian_filter1d

from speechkern.errors import SpeechkernError
from speechkern.progress import report

RMS_LEVEL = 0.05
"""RMS of every synthesised utterance (whole length, full scale = 1)."""
NOISE_FLOOR_DB = -60.0
"""Level of the white noise floor relative to :data:`RMS_LEVEL`, in dB."""
BLOCK_S = 0.005
"""Formant filters are updated every ``BLOCK_S`` seconds (5 ms); filter state carries across blocks."""


@dataclass(frozen=True)
class Talker:
    """A synthetic speaker.

    name: identifier used in utterance ids. f0_hz: geometric-mean fundamental frequency over voiced speech (Hz).
    f0_range_st: size of the intonation movements (semitones). tract_scale: formant multiplier against an adult
    male tract of about 17 cm (>1 means a shorter tract, higher formants). rate_syl_s: speaking rate (syllables
    per second). breathiness: 0..1, more aspiration, a longer open phase and a steeper spectral tilt.
    jitter, shimmer: relative per-cycle standard deviation of period and amplitude.
    """

    name: str
    f0_hz: float
    f0_range_st: float
    tract_scale: float
    rate_syl_s: float
    breathiness: float
    jitter: float = 0.008
    shimmer: float = 0.04

    def __post_init__(self) -> None:
        positive = {"f0_hz": self.f0_hz, "tract_scale": self.tract_scale, "rate_syl_s": self.rate_syl_s}
        for field, value in positive.items():
            if not value > 0:
                raise SpeechkernError(f"Talker {self.name!r}: {field} must be positive, not {value}")
        if not 0 <= self.breathiness <= 1:
            raise SpeechkernError(f"Talker {self.name!r}: breathiness must lie in [0, 1], not {self.breathiness}")


TALKERS: tuple[Talker, ...] = (
    Talker("talker0", 98.0, 4.0, 1.00, 4.2, 0.10),
    Talker("talker1", 115.0, 6.0, 0.94, 5.0, 0.20),
    Talker("talker2", 132.0, 5.0, 1.06, 3.6, 0.30, jitter=0.012),
    Talker("talker3", 190.0, 7.0, 1.14, 4.6, 0.35),
    Talker("talker4", 212.0, 5.0, 1.20, 5.4, 0.25, shimmer=0.06),
    Talker("talker5", 238.0, 8.0, 1.26, 4.0, 0.45),
)

# Vowel targets F1-F3 (Hz): adult male averages of Peterson & Barney (1952), and a neutral schwa "@";
# F4 and F5 are fixed.
VOWELS: dict[str, tuple[float, float, float]] = {
    "i": (270, 2290, 3010), "I": (390, 1990, 2550), "E": (530, 1840, 2480), "ae": (660, 1720, 2410),
    "a": (730, 1090, 2440), "O": (570, 840, 2410), "U": (440, 1020, 2240), "u": (300, 870, 2240),
    "V": (640, 1190, 2390), "3r": (490, 1350, 1690), "@": (500, 1500, 2500),
}  # fmt: skip
_F45 = (3500.0, 4500.0)  # Hz, F4 and F5 (male)
_BANDWIDTHS = np.array([70.0, 100.0, 150.0, 220.0, 300.0])  # Hz, B1-B5
# Fricative and burst noise bands (Hz, male; scaled by the tract) before the tract-independent parallel branch.
_NOISE_BANDS: dict[str, tuple[float, float]] = {"s": (3800, 7600), "sh": (2300, 5800), "f": (1000, 7600),
                                                "k": (1400, 3600)}  # fmt: skip


@dataclass(frozen=True)
class _Consonant:
    manner: str  # stop, fricative, aspirate, nasal, approximant
    voiced: bool
    band: str | None  # noise band of the frication or burst
    level: float  # frication/burst RMS relative to the vowel RMS
    locus: tuple[float, float, float] | None  # F1-F3 targets (Hz); None: take them from the neighbouring vowel
    dur_ms: float  # duration at 4.5 syllables/s


_LAB, _ALV, _VEL = (250, 900, 2200), (250, 1700, 2700), (250, 2000, 2300)
CONSONANTS: dict[str, _Consonant] = {
    "p": _Consonant("stop", False, "f", 0.45, _LAB, 95), "t": _Consonant("stop", False, "s", 0.60, _ALV, 95),
    "k": _Consonant("stop", False, "k", 0.70, _VEL, 100), "b": _Consonant("stop", True, "f", 0.22, _LAB, 75),
    "d": _Consonant("stop", True, "s", 0.30, _ALV, 75), "g": _Consonant("stop", True, "k", 0.40, _VEL, 80),
    "s": _Consonant("fricative", False, "s", 0.55, (300, 1700, 2700), 115),
    "sh": _Consonant("fricative", False, "sh", 0.60, (300, 1900, 2500), 115),
    "f": _Consonant("fricative", False, "f", 0.18, (300, 1100, 2300), 100),
    "z": _Consonant("fricative", True, "s", 0.25, (300, 1700, 2700), 90),
    "v": _Consonant("fricative", True, "f", 0.10, (300, 1100, 2300), 80),
    "h": _Consonant("aspirate", False, None, 0.0, None, 75),
    "m": _Consonant("nasal", True, None, 0.0, (250, 1000, 2200), 70),
    "n": _Consonant("nasal", True, None, 0.0, (250, 1500, 2600), 65),
    "l": _Consonant("approximant", True, None, 0.0, (350, 1100, 2700), 60),
    "r": _Consonant("approximant", True, None, 0.0, (350, 1150, 1500), 60),
    "w": _Consonant("approximant", True, None, 0.0, (300, 700, 2200), 60),
    "j": _Consonant("approximant", True, None, 0.0, (280, 2200, 3000), 55),
}  # fmt: skip
_ONSETS = tuple(CONSONANTS)
_CODAS = tuple(c for c in CONSONANTS if c not in ("h", "w", "j"))


@dataclass
class _Score:
    """Control tracks being written: per-sample amplitudes, per-block formant targets and pitch (semitones)."""

    voice: np.ndarray  # voicing amplitude
    aspiration: np.ndarray  # aspiration noise into the tract
    frication: dict[str, np.ndarray]  # per noise band, parallel branch
    formants: np.ndarray  # (n_blocks, 3) F1-F3 targets, NaN where unset
    pitch: np.ndarray  # (n_blocks,) semitones re. the talker's F0
    block: int

    def blocks(self, a: int, b: int) -> slice:
        return slice(a // self.block, max(a // self.block + 1, -(-b // self.block)))


def _smooth(x: np.ndarray, sigma_s: float, sr: int) -> np.ndarray:
    """Gaussian smoothing (standard deviation ``sigma_s`` seconds) of a per-sample envelope, computed on a grid
    of ``sigma_s`` steps and interpolated back: O(n) whatever the width, unlike a per-sample convolution."""
    step = max(1, round(sigma_s * sr))
    n_steps = -(-len(x) // step)
    coarse = np.pad(x, (0, n_steps * step - len(x))).reshape(n_steps, step).mean(axis=1)
    return np.interp(np.arange(len(x)), (np.arange(n_steps) + 0.5) * step - 0.5, gaussian_filter1d(coarse, 1.0))


def _taper(n: int, power: float = 0.5) -> np.ndarray:
    """Rounded on/off shape of ``n`` samples (sine raised to ``power``): quick attack, quick decay."""
    return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** power


def _consonant(score: _Score, c: _Consonant, a: int, b: int, sr: int, rng: np.random.Generator) -> None:
    """Write one consonant into ``score`` over samples ``[a, b)``."""
    n = b - a
    if c.locus is not None:
        score.formants[score.blocks(a, b)] = c.locus
    if c.manner == "stop":  # closure (silence or a weak voice bar), a burst, then aspiration if voiceless
        burst = a + int(0.6 * n)
        if c.voiced:
            score.voice[a:burst] = 0.08
        n_burst = int(sr * rng.uniform(0.006, 0.012))
        score.frication[c.band][burst : burst + n_burst] = c.level * np.exp(-np.arange(n_burst) / (0.3 * n_burst))
        if not c.voiced:
            score.aspiration[burst + n_burst // 2 : b] = 0.5 * _taper(b - burst - n_burst // 2, 0.3)
    elif c.manner == "fricative":
        score.frication[c.band][a:b] = c.level * _taper(n, 0.4)
        if c.voiced:
            score.voice[a:b] = 0.35
    elif c.manner == "aspirate":
        score.aspiration[a:b] = 0.6 * _taper(n)
    else:  # nasal murmur or approximant: voiced, weaker than a vowel
        score.voice[a:b] = 0.3 if c.manner == "nasal" else 0.6


def _write_utterance(score: _Score, talker: Talker, n: int, sr: int, rng: np.random.Generator) -> None:
    """Random phrases of words of CV/CVC syllables, with pauses, written into ``score`` up to sample ``n``."""
    t = int(min(sr * rng.uniform(0.10, 0.30), 0.1 * n))  # leading silence
    end = n - int(min(0.12 * sr, 0.1 * n))  # trailing silence
    tempo = 4.5 / talker.rate_syl_s  # consonant durations are given at 4.5 syllables/s
    span = talker.f0_range_st
    full = False
    while not full:  # one phrase per pass
        phrase_start, last_vowel = t, None
        for _ in range(rng.integers(2, 6)):
            n_syl = rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])
            stressed = rng.integers(n_syl)
            for i in range(n_syl):
                dur = int(sr / talker.rate_syl_s * rng.uniform(0.75, 1.25) * (1.25 if i == stressed else 1.0))
                full = t + dur > end
                if full:
                    break
                onset = CONSONANTS[rng.choice(_ONSETS)] if rng.random() < 0.8 else None
                coda = CONSONANTS[rng.choice(_CODAS)] if rng.random() < 0.35 else None
                n_on = min(int(sr * onset.dur_ms * 1e-3 * tempo), int(0.4 * dur)) if onset else 0
                n_coda = min(int(sr * coda.dur_ms * 1e-3 * tempo), int(0.3 * dur)) if coda else 0
                v0, v1 = t + n_on, t + dur - n_coda
                if onset:
                    _consonant(score, onset, t, v0, sr, rng)
                gain = 1.3 if i == stressed else rng.uniform(0.7, 1.0)
                score.voice[v0:v1] = gain * np.linspace(1.0, 0.7, v1 - v0)
                reduced = i != stressed and rng.random() < 0.5  # unstressed vowels are often reduced
                score.formants[score.blocks(v0, v1)] = VOWELS[rng.choice(["@", "I"] if reduced else list(VOWELS))]
                if coda:
                    _consonant(score, coda, v1, t + dur, sr, rng)
                if i == stressed and rng.random() < 0.6:  # pitch accent on the stressed vowel
                    centre, width = (v0 + v1) / 2 / score.block, 0.08 * sr / score.block
                    k = np.arange(len(score.pitch))
                    score.pitch += rng.uniform(0.3, 0.8) * span * np.exp(-0.5 * ((k - centre) / width) ** 2)
                last_vowel, t = (v0, v1), t + dur
                phrase_end = t
            if full:
                break
            t += int(sr * rng.uniform(0.04, 0.15)) if rng.random() < 0.5 else 0  # gap between words
        if last_vowel is None:
            return
        phrase = score.blocks(phrase_start, phrase_end)
        score.pitch[phrase] += np.linspace(0.4 * span, -0.4 * span, phrase.stop - phrase.start)  # declination
        final = score.blocks(*last_vowel)  # phrase-final fall, or a question-like rise
        score.pitch[final] += np.linspace(0.0, (0.6 if rng.random() < 0.2 else -0.5) * span, final.stop - final.start)
        t += int(sr * rng.uniform(0.25, 0.60))  # pause between phrases


def _resonator_sos(freqs: np.ndarray, bandwidths: np.ndarray, sr: int) -> np.ndarray:
    """Second-order sections (…, 6) of unit-DC-gain resonators; those at or above 0.45·sr pass signal unchanged."""
    r = np.exp(-np.pi * bandwidths / sr)
    a1, a2 = -2.0 * r * np.cos(2.0 * np.pi * freqs / sr), r**2
    keep = freqs < 0.45 * sr
    a1, a2 = np.where(keep, a1, 0.0), np.where(keep, a2, 0.0)
    zeros = np.zeros_like(a1)
    return np.stack([1.0 + a1 + a2, zeros, zeros, np.ones_like(a1), a1, a2], axis=-1)


def _glottal_source(f0: np.ndarray, talker: Talker, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg glottal flow (peak 1) for a per-sample F0 (Hz) with per-cycle jitter: with and without shimmer."""
    cycle = np.floor(np.cumsum(f0 / sr)).astype(np.int64)
    jitter = 1.0 + talker.jitter * rng.standard_normal(cycle[-1] + 2)
    phase = np.cumsum(f0 * jitter[cycle] / sr)
    cycle, frac = np.floor(phase).astype(np.int64), phase % 1.0
    open_q = 0.65 + 0.2 * talker.breathiness  # open quotient: breathier voices open longer
    rise, fall = 0.8 * open_q, 0.2 * open_q
    flow = np.where(frac < rise, 0.5 * (1.0 - np.cos(np.pi * frac / rise)), 0.0)
    closing = (frac >= rise) & (frac < rise + fall)
    flow[closing] = np.cos(0.5 * np.pi * (frac[closing] - rise) / fall)
    shimmer = 1.0 + talker.shimmer * rng.standard_normal(cycle[-1] + 1)
    return flow * shimmer[cycle], flow


def synthesize(talker: Talker, duration_s: float, seed: int, sr: int = 16000) -> np.ndarray:
    """One utterance of ``talker``: float32, ``round(duration_s·sr)`` samples at ``sr`` Hz, RMS :data:`RMS_LEVEL`.

    The same (talker, duration_s, seed, sr) always gives the same samples.
    """
    if not np.isfinite(duration_s) or duration_s <= 0:
        raise SpeechkernError(f"duration_s must be a positive number of seconds, not {duration_s!r}")
    if sr < 8000:
        raise SpeechkernError(f"sample rate {sr} Hz is too low for speech; use 8000 Hz or more (16000 is usual)")
    n = round(duration_s * sr)
    if n < 1:
        raise SpeechkernError(f"duration_s={duration_s} s is shorter than one sample at {sr} Hz; ask for more")
    rng = np.random.default_rng(seed)
    block = max(1, round(BLOCK_S * sr))
    n_blocks = -(-n // block)
    score = _Score(np.zeros(n), np.zeros(n), {k: np.zeros(n) for k in _NOISE_BANDS},
                   np.full((n_blocks, 3), np.nan), np.zeros(n_blocks), block)  # fmt: skip
    _write_utterance(score, talker, n, sr, rng)

    # Smooth the control tracks: attack/decay of ~15 ms, formant transitions of ~40 ms, gliding pitch.
    voice = _smooth(score.voice, 0.005, sr)
    aspiration = _smooth(score.aspiration, 0.003, sr)
    set_blocks = ~np.isnan(score.formants[:, 0])
    k = np.arange(n_blocks)
    targets = (np.stack([np.interp(k, k[set_blocks], col[set_blocks]) for col in score.formants.T], axis=1)
               if set_blocks.any() else np.tile(VOWELS["V"], (n_blocks, 1)))  # fmt: skip
    targets = gaussian_filter1d(targets, 0.02 * sr / block, axis=0)
    freqs = np.concatenate([targets, np.broadcast_to(_F45, (n_blocks, 2))], axis=1) * talker.tract_scale
    bandwidths = _BANDWIDTHS * (1.0 + 0.5 * talker.breathiness)

    # Pitch: centre the contour on the talker's F0 over voiced blocks, add slow wander, go to per-sample Hz.
    voiced_blocks = voice[::block][:n_blocks] > 0.3
    wander = gaussian_filter1d(rng.standard_normal(n_blocks), 0.15 * sr / block)
    wander *= 0.4 / np.sqrt(np.mean(wander**2))  # 0.4 semitone RMS slow drift
    pitch = gaussian_filter1d(score.pitch, 0.03 * sr / block) + wander
    if voiced_blocks.any():
        pitch -= pitch[voiced_blocks].mean()
    f0 = talker.f0_hz * 2.0 ** (np.interp(np.arange(n) / block, k, pitch) / 12.0)

    # Voice source: glottal flow derivative (includes lip radiation), extra tilt for breathy voices, aspiration.
    flow, bare_flow = _glottal_source(f0, talker, sr, rng)
    source = np.diff(flow * voice, prepend=0.0)
    tilt = 0.6 * talker.breathiness
    source = signal.lfilter([1.0 - tilt], [1.0, -tilt], source)
    voiced_rms = np.sqrt(np.mean(source[voice > 0.3] ** 2)) if (voice > 0.3).any() else 1.0
    breath = talker.breathiness * 0.4 * voice * (0.3 + bare_flow)  # pitch-synchronous breath noise
    source += voiced_rms * (aspiration + breath) * rng.standard_normal(n)

    # Cascade formant filter, coefficients updated per block with the filter state carried over.
    sos = _resonator_sos(freqs, np.broadcast_to(bandwidths, freqs.shape), sr)
    # Pauses are skipped: a block whose input, and that of the 20 blocks (100 ms) before it, is silent gives
    # silence, since the resonators (time constants of 5 ms or less) have rung out by then.
    level = np.abs(np.pad(source, (0, n_blocks * block - n))).reshape(n_blocks, block).max(axis=1)
    quiet = np.convolve(level <= 1e-9 * level.max(), np.ones(21), "full")[:n_blocks] >= 21
    speech, state = np.zeros(n), np.zeros((5, 2))
    for j in np.flatnonzero(~quiet):
        part = slice(j * block, (j + 1) * block)
        if j > 0 and quiet[j - 1]:
            state = np.zeros((5, 2))
        speech[part], state = signal.sosfilt(sos[j], source[part], zi=state)
    vowel_rms = np.sqrt(np.mean(speech[voice > 0.5] ** 2)) if (voice > 0.5).any() else 1.0

    # Parallel frication branch: unit-RMS band-passed noise per band, times its envelope, relative to vowel RMS.
    for name, (lo, hi) in _NOISE_BANDS.items():
        envelope = _smooth(score.frication[name], 0.001, sr)
        if not envelope.any():
            continue
        hi = min(hi * talker.tract_scale, 0.45 * sr)
        band = signal.butter(4, [min(lo * talker.tract_scale, 0.6 * hi), hi], "bandpass", fs=sr, output="sos")
        noise = signal.sosfilt(band, rng.standard_normal(n))
        speech += vowel_rms * envelope * noise / noise.std()

    rms = np.sqrt(np.mean(speech**2))
    speech = speech * (RMS_LEVEL / rms) if rms > 0 else speech
    speech += RMS_LEVEL * 10 ** (NOISE_FLOOR_DB / 20) * rng.standard_normal(n)
    return np.clip(speech, -1.0, 1.0).astype(np.float32)


def utterances(
    n: int,
    seed: int,
    sr: int = 16000,
    talkers: Sequence[Talker] = TALKERS,
    min_duration_s: float = 2.0,
    max_duration_s: float = 4.0,
) -> list[tuple[str, np.ndarray]]:
    """``n`` utterances ``(id, waveform)`` taking the talkers in turn; ids read ``"<talker>-<index:04d>"``.

    Utterance ``i`` has its own seed (child ``i`` of ``SeedSequence(seed)``) and a duration drawn uniformly from
    ``[min_duration_s, max_duration_s]`` seconds, so the first ``m`` utterances do not depend on ``n``.
    """
    if n < 0:
        raise SpeechkernError(f"the number of utterances must be 0 or more, not {n}")
    if not talkers:
        raise SpeechkernError("no talkers given; pass at least one Talker (see speechkern.synth.TALKERS)")
    if not 0 < min_duration_s <= max_duration_s:
        raise SpeechkernError(
            f"durations must satisfy 0 < min_duration_s <= max_duration_s; got {min_duration_s} and {max_duration_s}"
        )
    out = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(child)
        talker = talkers[i % len(talkers)]
        duration = rng.uniform(min_duration_s, max_duration_s)
        out.append((f"{talker.name}-{i:04d}", synthesize(talker, duration, int(rng.integers(2**63)), sr)))
        report("synth", i + 1, n, "synthesising speech")
    return out


def talker_of(utt_id: str) -> str:
    """The talker name of an utterance id made by :func:`utterances` (``"talker3-0007"`` → ``"talker3"``)."""
    name, sep, index = utt_id.rpartition("-")
    if not sep or not name or not index.isdigit():
        raise SpeechkernError(f"utterance id {utt_id!r} is not of the form '<talker>-<number>' made by utterances()")
    return name
