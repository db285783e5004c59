"""Mixtures at a set SNR, the noise split, generated noises, and manifests that rebuild any mixture exactly.

SPEC §2: the noise is scaled so that 10·log10(Σs²/Σn²) over the whole utterance equals the target SNR;
training and validation mixtures draw noise segments from the first half of each noise recording, test
mixtures from the second half. With a validation share (``data.val_noise_share``) the validation mixtures draw
from the last part of the first half instead, which training never hears. Speech-shaped noise is white noise
shaped by the long-term average spectrum of training speech; babble is a sum of several level-normalised talkers,
different ones in each part.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from speechkern import audio
from speechkern.errors import SpeechkernError
from speechkern.outputs import write_text

SPLITS = ("train", "val", "test")


def min_noise_samples(sr: int) -> int:
    """The shortest noise (0.1 s at ``sr`` Hz) a mixture takes: a split part of a training recording, or a
    recording looped under longer speech (a few samples looped are a constant or a buzz, not noise)."""
    return sr // 10


def energy(y: np.ndarray) -> float:
    """Sum of squares, accumulated in float64."""
    return float(np.dot(y.astype(np.float64), y.astype(np.float64)))


def noise_gain(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, clean_path: str | None = None,
    noise_path: str | None = None, offset: int | None = None, other_draw: str = "another noise",
) -> float:  # fmt: skip
    """Factor for ``noise`` so that the whole-utterance SNR of ``clean + gain·noise`` is ``snr_db`` dB.

    Raises SpeechkernError when either is silent (all zeros), naming ``clean_path`` or ``noise_path`` (and the
    segment's ``offset`` in samples) where given, and ``other_draw``, what else to choose, for a silent segment."""
    e_s, e_n = energy(clean), energy(noise)
    if e_s <= 0.0:
        where = f"{clean_path}: " if clean_path else ""
        raise SpeechkernError(f"{where}the clean speech is silent (all zeros), so no SNR can be set for it; give a "
                              "recording of speech (or remove this one from the corpus)")  # fmt: skip
    if e_n <= 0.0:
        where = f"{noise_path}: " if noise_path else ""
        at = f" at sample {offset}" if offset is not None else ""
        raise SpeechkernError(f"{where}the noise segment{at} ({len(noise)} samples) is silent (all zeros); choose "
                              f"{other_draw}, or trim the silence from the recording")  # fmt: skip
    return float(np.sqrt(e_s / (e_n * 10.0 ** (snr_db / 10.0))))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Mix speech and an equally long noise segment at ``snr_db`` dB.

    Returns the mixture, the scaled noise (so that mixture = clean + scaled noise) and the gain applied.
    """
    if clean.shape != noise.shape:
        raise SpeechkernError(f"clean ({clean.shape[-1]} samples) and noise ({noise.shape[-1]}) differ in length")
    gain = noise_gain(clean, noise, snr_db)
    scaled = (noise.astype(np.float64) * gain).astype(np.float32)
    return (clean + scaled).astype(np.float32), scaled, gain


def segment_range(noise_length: int, half: str) -> tuple[int, int]:
    """Sample range ``[start, stop)`` a split may draw noise from: ``"first"`` or ``"second"`` half."""
    middle = noise_length // 2
    if half == "first":
        return 0, middle
    if half == "second":
        return middle, noise_length
    raise ValueError(f"half must be 'first' or 'second', not {half!r}")


def half_for_split(split: str) -> str:
    """Training and validation mixtures use the first half of each noise, test mixtures the second."""
    return "second" if split == "test" else "first"


def split_range(noise_length: int, split: str, val_share: float = 0.0) -> tuple[int, int]:
    """Sample range ``[start, stop)`` the mixtures of ``split`` draw noise from.

    The test split takes the second half. With ``val_share`` = 0 training and validation share the first half
    (SPEC §2); with 0 < ``val_share`` < 1 validation takes the last ``val_share`` of the first half and training
    the rest, so that validation, like test, hears noise that training never did.
    """
    start, stop = segment_range(noise_length, half_for_split(split))
    if split == "test" or val_share <= 0:
        return start, stop
    cut = round(stop * (1.0 - val_share))
    return (cut, stop) if split == "val" else (0, cut)


def parts(n_samples: int, val_share: float = 0.0) -> list[tuple[int, int]]:
    """The ``[start, stop)`` ranges of a noise that no two splits share: the two halves, or with ``val_share``
    the training part, the validation part and the test half (:func:`split_range`)."""
    return list(dict.fromkeys(split_range(n_samples, split, val_share) for split in SPLITS))


def cut_noise(noise: np.ndarray, offset: int, n_samples: int, start: int, stop: int) -> np.ndarray:
    """``n_samples`` of noise beginning at ``offset`` inside ``[start, stop)``, wrapping within that range.

    Wrapping keeps a split inside its half of the recording even when the half is shorter than the utterance.
    """
    idx = start + (offset - start + np.arange(n_samples)) % (stop - start)
    return noise[idx]


# ---------------------------------------------------------------------------------------------------------
# Generated noises


def long_term_spectrum(signals: Iterable[np.ndarray], n_fft: int = 1024) -> np.ndarray:
    """Long-term average power spectrum (``n_fft // 2 + 1`` bins) of speech, each signal weighted by its length."""
    from scipy.signal import welch

    total = np.zeros(n_fft // 2 + 1)
    weight = 0
    for y in signals:
        if len(y) < n_fft:
            continue
        _, pxx = welch(y.astype(np.float64), nperseg=n_fft, noverlap=n_fft // 2, window="hann")
        total += pxx * len(y)
        weight += len(y)
    if weight == 0:
        raise SpeechkernError(f"speech-shaped noise needs speech longer than {n_fft} samples; none was given")
    return total / weight


def seeded(seed: int) -> np.random.Generator:
    """NumPy's generator for ``seed``; a SpeechkernError unless it is a whole number ≥ 0 (NumPy's own error for -1
    is a ValueError naming no parameter)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise SpeechkernError(f"seed={seed!r}: expected a whole number ≥ 0 (each gives its own reproducible draw)")
    return np.random.default_rng(int(seed))


def speech_shaped_noise(spectrum: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
    """Stationary noise with the given power spectrum: random phases under the spectrum's magnitude.

    spectrum: ``n_fft // 2 + 1`` power values on a uniform grid from 0 Hz to the Nyquist frequency.
    Returns float32 noise of ``n_samples`` samples with RMS 0.05.
    """
    rng = seeded(seed)
    n_bins = n_samples // 2 + 1
    grid = np.linspace(0.0, 1.0, len(spectrum))
    magnitude = np.sqrt(np.interp(np.linspace(0.0, 1.0, n_bins), grid, spectrum))
    phase = rng.uniform(0.0, 2.0 * np.pi, n_bins)
    y = np.fft.irfft(magnitude * np.exp(1j * phase), n=n_samples)
    return (0.05 * y / np.sqrt(np.mean(y**2))).astype(np.float32)


def babble(
    talkers: Sequence[Sequence[np.ndarray]], n_samples: int, seed: int, n_talkers: int = 6, val_share: float = 0.0,
    remedy: str = "use more training talkers or another noise",
) -> np.ndarray:  # fmt: skip
    """Babble whose parts share no talker: each part (:func:`parts`) is the sum of its own talkers.

    talkers: for each available talker, a list of their utterances (float32 waveforms).
    The first half (``[0, n_samples // 2)``, where training and validation mixtures draw noise; see
    :func:`segment_range`) sums ``k`` talkers, the second half (test mixtures) ``k`` other talkers, with
    k = min(n_talkers, available // 2); with ``val_share`` > 0 the validation part of the first half
    (:func:`split_range`) has ``k`` talkers of its own too, k = min(n_talkers, available // 3). Each talker's
    utterances are concatenated in random order into a stream that is level-normalised over its part; a stream
    shorter than its part repeats inside that part only, so no speech is heard on both sides of a split (SPEC §2).
    Each part has RMS 0.05.
    Returns float32 babble of ``n_samples`` samples. Raises SpeechkernError with fewer than 2 talkers with speech
    per part, ending with ``remedy``.
    """
    usable = [utts for utts in talkers if sum(len(u) for u in utts) > 0]
    ranges = parts(n_samples, val_share)
    if len(usable) < 2 * len(ranges):
        raise SpeechkernError(
            f"babble needs at least {2 * len(ranges)} talkers with speech (2 for each of its {len(ranges)} parts: "
            f"{', '.join(SPLITS if len(ranges) == 3 else ('train and val', 'test'))}); {len(usable)} given: {remedy}"
        )
    rng = seeded(seed)
    order = rng.permutation(len(usable))
    k = min(n_talkers, len(usable) // len(ranges))
    out = np.zeros(n_samples, dtype=np.float64)
    for j, (start, stop) in enumerate(ranges):
        chosen = order[j * k : (j + 1) * k]
        length = stop - start
        if length == 0:
            continue
        part = np.zeros(length)
        for t in chosen:
            stream = np.concatenate([usable[t][i] for i in rng.permutation(len(usable[t]))]).astype(np.float64)
            if len(stream) < length:  # repeat inside this part only
                stream = np.tile(stream, int(np.ceil(length / len(stream))) + 1)
            offset = int(rng.integers(0, len(stream) - length + 1))
            piece = stream[offset : offset + length]
            part += piece / max(np.sqrt(np.mean(piece**2)), 1e-12)
        out[start:stop] = 0.05 * part / max(np.sqrt(np.mean(part**2)), 1e-12)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Manifests


@dataclass(frozen=True)
class Mixture:
    """One mixture, everything needed to rebuild it exactly.

    clean / noise: audio file paths; the first ``n_samples`` samples of the clean file (at ``sr`` Hz) are used.
    noise_offset: first noise sample used; the segment wraps inside ``[noise_start, noise_stop)``, the half of
    the recording this split may use. gain: the noise scale that gives ``snr_db``; seed: the seed of the offset.
    """

    id: str
    split: str
    condition: str
    clean: str
    noise: str
    noise_name: str
    snr_db: float
    noise_offset: int
    noise_start: int
    noise_stop: int
    n_samples: int
    gain: float
    seed: int
    sr: int = 16000
    talker: str = ""
    paired: bool = False

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rebuild ``(mixture, clean, scaled_noise)`` from the files."""
        clean, _ = audio.load(self.clean, sr=self.sr)
        noise, _ = audio.load(self.noise, sr=self.sr)
        return self.build_from(clean, noise)

    def build_from(self, clean: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rebuild from already loaded clean speech and the whole noise recording."""
        if len(clean) < self.n_samples:
            raise SpeechkernError(
                f"{self.clean}: {len(clean)} samples where the manifest recorded {self.n_samples}; "
                "the file changed since the manifest was written: rebuild the run (train it again with overwrite=True)"
            )
        clean = clean[: self.n_samples]
        if self.paired:
            noisy = _fit(noise, self.n_samples)
            return noisy, clean, (noisy.astype(np.float64) - clean).astype(np.float32)
        segment = cut_noise(noise, self.noise_offset, self.n_samples, self.noise_start, self.noise_stop)
        scaled = (segment.astype(np.float64) * self.gain).astype(np.float32)
        return (clean + scaled).astype(np.float32), clean, scaled


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def paired_mixture(
    *, mixture_id: str, split: str, clean_path: str, clean: np.ndarray, noisy_path: str, noisy: np.ndarray,
    condition: str, sr: int, talker: str = "",
) -> Mixture:  # fmt: skip
    """Record a recorded noisy/clean pair; the SNR is measured over the whole utterance."""
    noise = _fit(noisy, len(clean)).astype(np.float64) - clean
    e_n = float(np.dot(noise, noise))
    snr = 10.0 * np.log10(energy(clean) / e_n) if e_n > 0 else float("inf")
    return Mixture(
        id=mixture_id, split=split, condition=condition, clean=str(clean_path), noise=str(noisy_path),
        noise_name=condition, snr_db=float(snr), noise_offset=0, noise_start=0, noise_stop=len(clean),
        n_samples=len(clean), gain=1.0, seed=0, sr=sr, talker=talker, paired=True,
    )  # fmt: skip


def draw_mixture(
    *,
    mixture_id: str,
    split: str,
    clean_path: str,
    clean: np.ndarray,
    noise_path: str,
    noise_name: str,
    noise: np.ndarray,
    snr_db: float,
    seed: int,
    sr: int,
    talker: str = "",
    val_share: float = 0.0,
) -> Mixture:
    """Pick a noise segment for ``split`` (:func:`split_range` of ``val_share``) and the gain for ``snr_db``; record
    it."""
    start, stop = split_range(len(noise), split, val_share)
    if stop - start < min_noise_samples(sr):
        raise SpeechkernError(f"{noise_path}: too short to split into halves ({len(noise)} samples, {split} part "
                              f"{stop - start}); use longer noise or a smaller data.val_noise_share")  # fmt: skip
    rng = seeded(seed)
    offset = int(rng.integers(start, stop))
    segment = cut_noise(noise, offset, len(clean), start, stop)
    gain = noise_gain(clean, segment, snr_db, str(clean_path), str(noise_path), offset,
                      "another noise (or the recipe override data.seed=N for another draw)")  # fmt: skip
    condition = f"{noise_name}_{snr_db:g}dB"
    return Mixture(
        id=mixture_id, split=split, condition=condition, clean=str(clean_path), noise=str(noise_path),
        noise_name=noise_name, snr_db=float(snr_db), noise_offset=offset, noise_start=start, noise_stop=stop,
        n_samples=len(clean), gain=gain, seed=seed, sr=sr, talker=talker,
    )  # fmt: skip


def write_manifest(path: str | os.PathLike, mixtures: Sequence[Mixture]) -> None:
    """Write mixtures as JSON lines, atomically."""
    write_text(path, "".join(json.dumps(asdict(m)) + "\n" for m in mixtures))


def read_manifest(path: str | os.PathLike) -> list[Mixture]:
    """Read a manifest written by :func:`write_manifest`.

    A row's missing clean or noise file is looked for in the run's own audio folders (:func:`_in_run`; the run
    directory is the manifest's grandparent), so a run trained from another working directory, or moved, reads.
    Raises SpeechkernError naming the file (and the line) when it is missing, no UTF-8 text, or a row is no JSON
    object of :class:`Mixture`'s fields with values of their types (see :func:`_check_row`).
    """
    path = Path(path)
    if not path.is_file():
        raise SpeechkernError(f"{path}: manifest not found; train the run first (training writes its manifests)")
    rows = []
    rebuild = "delete the file to have the manifests rebuilt from the run's recipe"
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(_in_run(_check_row(Mixture(**json.loads(line))), path.parent.parent))
                except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
                    message = f"{path}:{number}: not a manifest row ({err}); repair the line, or {rebuild}"
                    raise SpeechkernError(message) from None
    except UnicodeDecodeError as err:
        raise SpeechkernError(f"{path}: not a manifest (no UTF-8 text: {err}); {rebuild}") from None
    return rows


# The run directory's folders of the audio it generates (dataset.build_manifests): sources/ (the demo corpus),
# noises/ (speech-shaped noise, babble, NOISEX-92 conversions).
RUN_AUDIO_FOLDERS = ("sources", "noises")


def _in_run(m: Mixture, run_dir: Path) -> Mixture:
    """``m`` with a clean or noise path that is missing but names a file of the run's own audio folders found in
    ``run_dir``: the run was trained from another working directory (its paths are relative to that one) or moved
    since. Other paths are left as they are (a missing corpus file stays an error)."""
    found = {}
    for name in ("clean", "noise"):
        original = Path(getattr(m, name))
        if original.exists():
            continue
        parts = original.parts
        for i in reversed([i for i, part in enumerate(parts) if part in RUN_AUDIO_FOLDERS]):
            candidate = run_dir.joinpath(*parts[i:])
            if candidate.is_file():
                found[name] = str(candidate)
                break
    return replace(m, **found) if found else m


_EXPECTED = {"str": "a string", "bool": "true or false", "int": "a whole number", "float": "a finite number"}


def _check_row(m: Mixture) -> Mixture:
    """``m`` when each field has its annotated type (``snr_db`` may be ±inf: a recorded pair without noise) and
    it can be rebuilt (a sample count ≥ 1, a gain ≥ 0, a noise range, a sample rate of recordings); else ValueError."""
    for f in fields(m):
        value = getattr(m, f.name)
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = {
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int": number and isinstance(value, numbers.Integral),
            "float": number and (math.isfinite(value) or (f.name == "snr_db" and not math.isnan(value))),
        }[f.type]  # fmt: skip
        if not ok:
            raise ValueError(f"{f.name} = {json.dumps(value)}: expected {_EXPECTED[f.type]}")
    if m.n_samples < 1 or m.gain < 0 or not 0 <= m.noise_start < m.noise_stop:
        sizes = f"n_samples = {m.n_samples}, gain = {m.gain:g}, noise range [{m.noise_start}, {m.noise_stop})"
        raise ValueError(f"{sizes}: expected a sample or more, a gain ≥ 0 and a non-empty noise range")
    if not audio.MIN_SR <= m.sr <= audio.MAX_SR:
        raise ValueError(f"sr = {m.sr}: expected a sample rate of {audio.MIN_SR}–{audio.MAX_SR} Hz")
    return m


def mix_files(
    clean_path: str | os.PathLike, noise_path: str | os.PathLike, snr_db: float, seed: int = 0, sr: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, dict]:
    """Mix two audio files at ``snr_db`` dB: a seeded random noise segment as long as the speech (looped if the
    noise is shorter). Both are mono at ``sr`` Hz (default: the clean file's rate).

    Returns ``(mixture, clean, scaled_noise, sr, info)`` with the offset and gain in ``info``, and each file's own
    channel count and rate (``clean_channels``, ``clean_sr``, ``noise_channels``, ``noise_sr``): files of several
    channels are averaged to mono and files at another rate resampled, which a caller may tell the user; and each
    file's format and encoding (``clean_format``, ``clean_subtype``, ...), for writing the mixture as precisely
    (:func:`speechkern.audio.mixture_subtype`). Raises SpeechkernError naming the file for a silent one, and
    for speech or noise shorter than 0.1 s (a mixture with no SNR worth the name; looped noise that is a constant
    or a buzz).
    """
    rng = seeded(seed)  # a bad seed is refused before the files are read
    heads = {"clean": audio.info(clean_path), "noise": audio.info(noise_path)}
    clean, rate = audio.load(clean_path, sr=sr)
    noise, _ = audio.load(noise_path, sr=rate)
    shortest = min_noise_samples(rate)
    if len(clean) < shortest:  # a mixture of a few samples has no SNR worth the name, and nothing can enhance it
        raise SpeechkernError(f"{clean_path}: {len(clean)} samples ({1000 * len(clean) / rate:.1f} ms) at {rate} Hz "
                              f"is too short to mix; give at least 0.1 s ({shortest} samples) of speech")  # fmt: skip
    if len(noise) < shortest:  # looped, it would be a constant or a buzz
        raise SpeechkernError(f"{noise_path}: {len(noise)} samples ({1000 * len(noise) / rate:.1f} ms) at {rate} Hz "
                              f"is too short to loop as noise; give at least 0.1 s ({shortest} samples) of noise "
                              "(training asks the same of each part of a recording)")  # fmt: skip
    offset = int(rng.integers(0, len(noise)))
    segment = cut_noise(noise, offset, len(clean), 0, len(noise))
    gain = noise_gain(clean, segment, snr_db, str(clean_path), str(noise_path), offset, "another noise or seed")
    scaled = (segment.astype(np.float64) * gain).astype(np.float32)
    mixture = (clean + scaled).astype(np.float32)
    info = {"clean": str(clean_path), "noise": str(noise_path), "snr_db": snr_db, "noise_offset": offset,
            "gain": gain, "sr": rate, "seed": seed}  # fmt: skip
    for name, head in heads.items():
        info[f"{name}_channels"], info[f"{name}_sr"] = head.channels, head.samplerate
        info[f"{name}_format"], info[f"{name}_subtype"] = head.format, head.subtype
    return mixture, clean, scaled, rate, info
