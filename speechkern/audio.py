"""Audio files in and out: soundfile for reading and writing, soxr for resampling.

Waveforms are float32 numpy arrays in [-1, 1]; shape ``(n_samples,)`` for mono, ``(n_channels, n_samples)``
for multichannel. Every error names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from speechkern.errors import SpeechkernError
from speechkern.outputs import atomic_write

# File suffixes of the formats libsndfile both reads and writes, by soundfile's format name (MP3 needs libsndfile
# 1.1 or later, so formats this build lacks are left out).
_FORMAT_SUFFIXES = {
    "WAV": (".wav",), "FLAC": (".flac",), "OGG": (".ogg", ".oga", ".opus"), "MP3": (".mp3",),
    "NIST": (".sph", ".nist"), "AIFF": (".aif", ".aiff", ".aifc"), "AU": (".au", ".snd"), "CAF": (".caf",),
    "W64": (".w64",), "RF64": (".rf64",),
}  # fmt: skip
FORMATS: dict[str, str] = {
    suffix: fmt
    for fmt, suffixes in _FORMAT_SUFFIXES.items()
    if fmt in sf.available_formats() and sf.check_format(fmt)
    for suffix in suffixes
}
# Every suffix the loader reads (and the writer writes): what enhance and the corpus folders are searched for.
READ_SUFFIXES = tuple(FORMATS)
# Audio suffixes libsndfile reads but cannot write, or cannot read at all: a path ending so names an audio file.
OTHER_AUDIO_SUFFIXES = (".m4a", ".aac", ".mp4", ".wma", ".amr", ".ape", ".wv", ".mka", ".webm", ".mp2", ".ac3")
# Linear PCM and float encodings: what a converted file keeps of its input's encoding when the new format holds it.
LINEAR_SUBTYPES = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
_BY_PRECISION = ("DOUBLE", "PCM_32", "FLOAT", "PCM_24", "PCM_16")
FORMATS_HELP = "WAV, FLAC, OGG, MP3, NIST SPHERE, AIFF, AU, CAF, W64 or RF64"
# Sample rates a recording can sensibly have, in Hz: a header outside them is damaged (a 1 Hz header turns a
# 176 kB file into a 42-minute job at the model's rate).
MIN_SR, MAX_SR = 4000, 384000
# A down-mix this far below its channels' mean power (dB) has cancelled: channels in opposite phase.
CANCELLED_DB = 20.0
# Samples a compressed file's header may overstate its length by (MP3/OGG decoders' padding); more is truncation.
SHORT_READ_SLACK = 4096

logger = logging.getLogger(__name__)


def as_path(value, name: str) -> Path:
    """``value`` (str, bytes or os.PathLike) as a Path, else SpeechkernError naming ``name``."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise SpeechkernError(f"{name}={value!r}: expected a path, a str or pathlib.Path")
    return Path(os.fsdecode(value))


def check_sr(sr, name: str = "sr") -> int:
    """A sample rate in Hz as an int: a whole number (8000.0 too) within :data:`MIN_SR`–:data:`MAX_SR`, else
    SpeechkernError naming ``name`` (0, negatives and NaN stopped in soxr, or hung it; 10**9 asked for gigabytes)."""
    ok = isinstance(sr, numbers.Real) and not isinstance(sr, bool) and math.isfinite(sr) and sr == int(sr)
    if not (ok and MIN_SR <= sr <= MAX_SR):
        raise SpeechkernError(f"{name}={sr!r}: expected a sample rate in Hz, a whole number from {MIN_SR} to {MAX_SR}")
    return int(sr)


def check_samples(y, name: str = "y", mono: bool = False, empty: bool = False) -> np.ndarray:
    """``y`` as float32 samples ``(n_samples,)`` or, unless ``mono``, ``(n_channels, n_samples)``; refused in one
    line naming ``name`` unless a non-empty (or, with ``empty``, any) array (or list) of finite real floating-point
    samples, full scale 1.0.

    Integer samples (int16 from ``scipy.io.wavfile``) are refused, not guessed: their full scale is the caller's to
    say (as librosa's ``valid_audio`` refuses them). Raises SpeechkernError for None, strings, scalars, integer,
    bool, complex or object arrays, other shapes (2-D when ``mono``; more channels than samples, i.e. transposed,
    otherwise), empty arrays, and NaN/infinite samples (or float64 ones beyond float32).
    """
    shape = "(n_samples,)" if mono else "(n_samples,) or (n_channels, n_samples)"
    if y is None or isinstance(y, (str, bytes)):
        raise SpeechkernError(f"{name}={y!r}: expected a waveform, an array of float samples {shape}")
    try:
        a = np.asarray(y)
    except ValueError:  # a ragged list
        raise SpeechkernError(f"{name}: a ragged sequence; expected an array of float samples {shape}") from None
    if a.dtype.kind in "iub":
        half = 2 ** (8 * a.dtype.itemsize - 1)
        convert = {"i": f"convert with y.astype(np.float32) / {half}, or ",
                   "u": f"convert with (y.astype(np.float32) - {half}) / {half}, or "}  # fmt: skip
        convert = convert.get(a.dtype.kind, "")
        raise SpeechkernError(f"{name}: {a.dtype} samples; expected floating-point samples with full scale 1.0; "
                              f"{convert}read the file with speechkern.audio.load")  # fmt: skip
    if a.dtype.kind != "f":
        what = "complex (a spectrum?)" if a.dtype.kind == "c" else f"{a.dtype}"
        raise SpeechkernError(f"{name}: {what} values; expected a real waveform, float samples {shape}")
    if a.ndim != 1 and (mono or a.ndim != 2 or a.shape[0] > a.shape[1]):
        hint = ""
        if a.ndim == 2:
            average = "; average the channels (y.mean(axis=0) for (n_channels, n_samples)) or enhance each on its own"
            hint = average if mono else "; more channels than samples: for an (n_samples, n_channels) array pass y.T"
        raise SpeechkernError(f"{name}: shape {a.shape}; expected {'a mono waveform ' if mono else ''}{shape}{hint}")
    if a.size == 0 and not empty:
        raise SpeechkernError(f"{name}: holds no samples; give a non-empty waveform")
    with np.errstate(over="ignore"):  # float64 beyond float32's range: refused just below, by name
        out = a.astype(np.float32, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        beyond = "" if (~np.isfinite(a)).sum() == bad.sum() else " (or beyond float32's range)"
        first = int(np.argmax(bad.any(axis=0) if bad.ndim == 2 else bad))
        raise SpeechkernError(f"{name}: holds {int(bad.sum())} NaN or infinite sample(s){beyond}, the first at index "
                              f"{first}; repair or drop them")  # fmt: skip
    return out


def native(path: str | os.PathLike) -> bytes:
    """``path`` as the bytes the operating system uses: libsndfile opens any file name this way, UTF-8 or not."""
    return os.fsencode(path)


def info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header of an audio file (sample rate, channels, frames), with a clear error when it is not audio."""
    path = Path(path)
    _check_exists(path)
    with _read_errors(path), sf.SoundFile(native(path)) as handle:
        check_rate(path, handle.samplerate)
        warn_truncated(path, handle)
    with _read_errors(path):
        return sf.info(native(path))


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
    Channels that cancel when averaged (opposite phase) give the strongest channel instead, with a warning.
    Raises SpeechkernError naming the file when it is missing, not a regular file, not audio, empty, has a sample
    rate outside :data:`MIN_SR`–:data:`MAX_SR`, holds NaN/infinite samples or fewer samples than its header says;
    and naming the parameter for an ``sr`` that is no such rate (:func:`check_sr`), a ``mono`` that is no bool, or a
    range that is not ``0 <= start < stop`` in whole samples inside the file.
    """
    path = as_path(path, "path")
    sr = None if sr is None else check_sr(sr)
    if not isinstance(mono, (bool, np.bool_)):
        raise SpeechkernError(f"mono={mono!r}: expected True or False")
    whole = [v for v in (start, stop) if v is not None]
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in whole) or (
        stop is not None and stop <= start
    ):
        raise SpeechkernError(f"start={start!r}, stop={stop!r}: expected sample numbers 0 <= start < stop (stop None: "
                              "to the end)")  # fmt: skip
    _check_exists(path)
    with _read_errors(path), _reader(path) as handle:
        check_rate(path, handle.samplerate)
        warn_truncated(path, handle)
        file_sr, end = handle.samplerate, handle.frames if stop is None else min(stop, handle.frames)
        if start and start >= handle.frames:
            raise SpeechkernError(f"{path}: start={start} is past its {handle.frames} samples; give a start inside it")
        handle.seek(min(start, handle.frames))
        data = handle.read(max(0, end - start), dtype="float32", always_2d=True)
        check_complete(path, handle, data.shape[0], max(0, end - start))
    if data.shape[0] == 0:
        raise SpeechkernError(f"{path}: the file holds no samples; give a non-empty recording")
    check_finite(data.T, path, file_sr, offset=start, subtype=handle.subtype)
    y = data.T  # (channels, samples)
    if mono:
        channel = cancelled_downmix(y)
        if channel is not None:
            logger.warning("%s: its channels cancel when averaged (opposite phase); using channel %d, the strongest",
                           path, channel + 1)  # fmt: skip
            y = y[channel]
        else:
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
    and passed 8.1 kHz at −7 dB on the way to 16 kHz. Raises SpeechkernError for a rate that is no sample rate
    (:func:`check_sr`) and a ``y`` of other dimensions.
    """
    orig_sr, target_sr = check_sr(orig_sr, "orig_sr"), check_sr(target_sr, "target_sr")
    if orig_sr == target_sr:
        return y
    if np.ndim(y) not in (1, 2):
        raise SpeechkernError(f"y: shape {np.shape(y)}; expected (n_samples,) or (n_channels, n_samples)")
    import soxr

    x = np.asarray(y, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(x.T), orig_sr, target_sr, quality="HQ")  # soxr: (frames, channels)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def save(path: str | os.PathLike, y: np.ndarray, sr: int, overwrite: bool = False, subtype: str | None = None):
    """Write a waveform atomically (temporary file, then rename); refuse to replace a file unless asked.

    path: its suffix chooses the format (see :data:`FORMATS`; an unknown suffix is refused).
    y: ``(n_samples,)`` or ``(n_channels, n_samples)``; values outside [-1, 1] are clipped by the PCM writer.
    subtype: soundfile's encoding name (default: the format's usual one, 16-bit PCM for WAV and FLAC).
    Raises SpeechkernError naming the path when it exists (without ``overwrite``) or cannot be written, and naming
    the parameter for samples :func:`check_samples` refuses, a rate :func:`check_sr` refuses, an unknown subtype.
    """
    path = as_path(path, "path")
    fmt = output_format(path)
    if path.exists() and not overwrite:
        raise SpeechkernError(f"{path}: exists already; choose another output name or pass overwrite=True")
    data, sr = check_samples(y, "y", empty=True), check_sr(sr)  # an empty file is a file
    data = data.T if data.ndim == 2 else data
    if subtype is not None and subtype not in sf.available_subtypes(fmt):
        known = ", ".join(sf.available_subtypes(fmt))
        raise SpeechkernError(f"subtype={subtype!r}: not an encoding of {fmt} files; expected one of {known}, or "
                              f"None for {_default_subtype(path)}")  # fmt: skip
    subtype = subtype or _default_subtype(path)
    check_holds(path, sr, data.shape[1] if data.ndim == 2 else 1, subtype)
    with write_errors(path):
        data = pcm_rounded(data, subtype)
        atomic_write(path, lambda tmp: sf.write(native(tmp), data, sr, format=fmt, subtype=subtype), replace=overwrite)


def check_holds(path: str | os.PathLike, sr: int, channels: int, subtype: str | None = None) -> None:
    """Refuse, before any work, a sample rate or channel count that ``path``'s format cannot hold (MP3 above
    48 kHz, OGG Vorbis at very high rates), naming the output and the formats that hold it."""
    fmt = output_format(path)
    subtype = subtype or _default_subtype(Path(path))
    if fmt == "OGG" and sr > 192000:  # libsndfile's Vorbis encoder crashes (segfault) above 192 kHz, not probed
        raise SpeechkernError(f"{path}: OGG files cannot hold {sr} Hz (192000 Hz at most); name the output "
                              f"{_holding(sr, channels, fmt)}")  # fmt: skip
    if not _holds(fmt, sr, channels, subtype):
        raise SpeechkernError(f"{path}: {fmt} files ({subtype}) cannot hold {channels} channel(s) at {sr} Hz; name "
                              f"the output {_holding(sr, channels, fmt)}")  # fmt: skip


def _holds(fmt: str, sr: int, channels: int, subtype: str) -> bool:
    """Whether libsndfile opens a ``fmt`` file of ``subtype`` with ``channels`` at ``sr`` Hz for writing."""
    with tempfile.TemporaryDirectory(prefix=".speechkern-") as folder:
        try:
            sf.SoundFile(os.path.join(folder, "probe"), "w", sr, channels, subtype, format=fmt).close()
        except (sf.LibsndfileError, RuntimeError, ValueError):
            return False
    return True


def _holding(sr: int, channels: int, failed: str) -> str:
    """The suffixes, other than ``failed``'s format, whose files hold ``channels`` at ``sr`` Hz (FLAC holds 8
    channels at most: suggesting .flac for 64 sent the user from one refusal to the next)."""
    found = [suffix for suffix, fmt in ((".wav", "WAV"), (".flac", "FLAC"))
             if fmt != failed and _holds(fmt, sr, channels, sf.default_subtype(fmt))]  # fmt: skip
    return " or ".join(found) if found else ".w64"


def output_format(path: str | os.PathLike) -> str:
    """soundfile's format name for an output path's suffix, e.g. ``"FLAC"`` for ``x.flac``.

    Raises SpeechkernError naming the path and the writable suffixes when its suffix is none of :data:`FORMATS`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        what = f"{suffix} files" if suffix else "a file without a suffix"
        raise SpeechkernError(f"{path}: cannot write {what}; name the output {', '.join(READ_SUFFIXES)}")
    return FORMATS[suffix]


def output_subtype(path: str | os.PathLike, input_format: str | None = None, input_subtype: str | None = None) -> str:
    """The encoding to write ``path`` in: the input's when the output's format holds it, else the format's default.

    A same-format copy keeps any encoding (VORBIS stays VORBIS); a converted file keeps linear PCM and float
    encodings (PCM_32, DOUBLE, …) only, so an MP3 input written as WAV becomes 16-bit PCM, not MP3-in-WAV; a
    32-bit or float input written as FLAC becomes 24-bit, the most FLAC holds.
    """
    fmt = output_format(path)
    keep = fmt == input_format or input_subtype in LINEAR_SUBTYPES
    if input_subtype and keep and sf.check_format(fmt, input_subtype):
        return input_subtype
    if input_subtype in _BY_PRECISION:  # the most precise encoding the format holds, no more precise than the input
        for subtype in _BY_PRECISION[_BY_PRECISION.index(input_subtype) :]:
            if sf.check_format(fmt, subtype):
                return subtype
    return _default_subtype(path)


def mixture_subtype(path: str | os.PathLike, sources: list[tuple[str, str]]) -> str:
    """The encoding to write a mix of several inputs into ``path``: the most precise of :func:`output_subtype` for
    each input's ``(format, subtype)``, so that float or 24-bit inputs are not rounded to 16 bits (quiet float
    recordings came out all zeros)."""
    subtypes = [output_subtype(path, fmt, subtype) for fmt, subtype in sources] or [_default_subtype(Path(path))]
    ranked = [s for s in subtypes if s in _BY_PRECISION]
    return min(ranked, key=_BY_PRECISION.index) if ranked else subtypes[0]


def _pcm_bits(subtype: str) -> int:
    """Bits per sample of the integer PCM encoding ``subtype`` (PCM_U8 … PCM_32), 0 for any other encoding."""
    return 8 * _SAMPLE_BYTES.get(subtype, 0) if subtype.startswith("PCM_") else 0


def pcm_rounded(y: np.ndarray, subtype: str) -> np.ndarray:
    """``y`` (full scale 1.0) rounded to the nearest step of the integer PCM encoding ``subtype`` and clipped to its
    range, for libsndfile to write exactly; other encodings are returned as they are. libsndfile truncates toward
    −∞ when it converts floats to PCM: every sample lost half a step on average, a DC of −0.5 LSB (−48 dBFS in
    8-bit files)."""
    bits = _pcm_bits(subtype)
    if bits == 0:
        return y
    scale = 2.0 ** (bits - 1)
    dtype = np.float64 if bits > 24 else np.float32  # float32 holds every 24-bit step exactly
    steps = np.clip(np.round(np.asarray(y, dtype=np.float64) * scale), -scale, scale - 1)
    return (steps / scale).astype(dtype)


def clips(subtype: str) -> bool:
    """Whether the encoding ``subtype`` cuts samples beyond full scale (±1.0) off: integer PCM, μ-law, A-law and
    the like do; float WAVs and the lossy codecs (Vorbis, Opus, MP3) keep them."""
    return not (subtype in ("FLOAT", "DOUBLE", "VORBIS", "OPUS") or subtype.startswith("MPEG"))


def silent_when_written(y: np.ndarray, subtype: str) -> bool:
    """Whether every sample of ``y`` (full scale 1.0) rounds to 0 in the integer PCM encoding ``subtype``."""
    bits = _pcm_bits(subtype)
    return bits > 0 and len(y) > 0 and float(np.max(np.abs(y))) < 0.5 * 2.0 ** (1 - bits)


def _default_subtype(path: Path) -> str:
    return "OPUS" if path.suffix.lower() == ".opus" else sf.default_subtype(output_format(path))


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Turn libsndfile's failure to open or decode ``path`` into one clear line (the twin of :func:`write_errors`)."""
    try:
        yield
    except (sf.LibsndfileError, RuntimeError) as err:
        reason = getattr(err, "error_string", None) or err  # not soundfile's "Error opening b'<path>'" prefix
        raise SpeechkernError(f"{path}: not a readable audio file ({reason}); give a {FORMATS_HELP} file") from None


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OS or libsndfile failure while writing ``path`` (disk full, read-only folder) into one clear line."""
    try:
        yield
    except (OSError, sf.SoundFileError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SpeechkernError(
            f"{path}: could not be written ({reason}); check that its folder is writable and the disk has space"
        ) from None


@contextlib.contextmanager
def open_read(path: str | os.PathLike) -> Iterator[sf.SoundFile]:
    """An open ``soundfile.SoundFile`` for reading blocks with :func:`read_block`; the errors of :func:`load`."""
    path = Path(path)
    _check_exists(path)
    with _read_errors(path):
        handle = _reader(path)
    with handle:
        check_rate(path, handle.samplerate)
        yield handle


def _reader(path: Path) -> sf.SoundFile | ForwardReader:
    """``path`` open for reading: a ``soundfile.SoundFile``, or a :class:`ForwardReader` over one whose encoding
    libsndfile decodes only forward."""
    handle = sf.SoundFile(native(path))
    if handle.seekable():
        return handle
    handle.close()
    return ForwardReader(path)


class ForwardReader:
    """A file libsndfile decodes only forward (GSM 6.10, G.721/G.723 ADPCM: ``seekable()`` is False and any
    ``seek``, even to the current sample, fails) read as if it could seek: forward by decoding and dropping,
    back into the last block read from memory (the overlap of enhancement's blocks), further back by reopening.
    Memory: one block. Other attributes (``samplerate``, ``frames``, ``name``, ...) are the ``SoundFile``'s."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._path = path
        self._file = sf.SoundFile(native(path))
        self._at = self._decoded = 0  # the next sample read; the next the decoder gives
        self._last = np.zeros((0, self._file.channels), dtype=np.float32)  # the last block read, from _last_start
        self._last_start = 0

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def __enter__(self) -> ForwardReader:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def seekable(self) -> bool:
        return True

    def seek(self, frames: int) -> int:
        self._at = max(0, min(int(frames), self._file.frames))
        return self._at

    def tell(self) -> int:
        return self._at

    def read(self, frames: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """``frames`` samples (fewer at the end) from the current sample, float32 ``(frames, n_channels)``."""
        if dtype != "float32" or not always_2d:
            raise ValueError("ForwardReader reads float32, always 2-D")
        parts = []
        offset = self._at - self._last_start
        if 0 <= offset < len(self._last):
            parts.append(self._last[offset : offset + frames])
            self._at += len(parts[0])
        wanted = frames - sum(len(p) for p in parts)
        if wanted > 0:
            if self._at < self._decoded:  # behind the decoder and the block kept: decode again from the start
                self._file.close()
                self._file, self._decoded = sf.SoundFile(native(self._path)), 0
            while self._decoded < self._at:  # ahead: decode and drop
                skipped = len(self._file.read(min(self._at - self._decoded, 1 << 20), dtype="float32"))
                if not skipped:
                    break
                self._decoded += skipped
            parts.append(self._file.read(wanted, dtype="float32", always_2d=True))
            self._decoded += len(parts[-1])
            self._at = self._decoded
        out = np.concatenate(parts) if parts else self._last[:0]
        self._last, self._last_start = out, self._at - len(out)
        return out


def read_block(handle: sf.SoundFile, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` (in the file's rate) of an open file as float32 ``(n_channels, stop - start)``,
    zero-padded where a compressed file's header overstates its length by a few samples.

    Raises SpeechkernError naming the file when the block cannot be read, holds NaN/infinite samples, or is
    shorter than the header promised (a truncated file, or one changed while it is read).
    """
    name = os.fsdecode(handle.name)
    try:
        handle.seek(start)
        data = handle.read(stop - start, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise SpeechkernError(f"{name}: could not be read at sample {start} ({err}); is it damaged?") from None
    check_complete(name, handle, data.shape[0], stop - start, offset=start)
    check_finite(data.T, name, handle.samplerate, offset=start, subtype=handle.subtype)
    # zeros past the true end, which a compressed file's header may overstate by a few samples
    return np.pad(data.T, ((0, 0), (0, stop - start - data.shape[0])))


def check_rate(path: str | os.PathLike, sr: int) -> None:
    """Refuse a sample rate outside :data:`MIN_SR`–:data:`MAX_SR` Hz, naming the file."""
    if not MIN_SR <= sr <= MAX_SR:
        raise SpeechkernError(
            f"{path}: its header gives a sample rate of {sr} Hz, outside the {MIN_SR}–{MAX_SR} Hz of recordings; "
            "the header is damaged: repair it or re-export the audio"
        )


def check_complete(path: str | os.PathLike, handle: sf.SoundFile, got: int, wanted: int, offset: int = 0) -> None:
    """Refuse a read that returned fewer samples than asked of a file whose header says they exist: the file is
    truncated, or changed while it was read. Compressed formats may fall short by :data:`SHORT_READ_SLACK`."""
    slack = 0 if handle.format in ("WAV", "WAVEX", "W64", "RF64", "AIFF", "AU", "CAF", "NIST") and handle.subtype in (
        *LINEAR_SUBTYPES, "ULAW", "ALAW") else SHORT_READ_SLACK  # fmt: skip
    if got + slack < wanted:
        sr = handle.samplerate
        raise SpeechkernError(
            f"{path}: holds {(offset + got) / sr:.3f} s of audio but its header promised {(offset + wanted) / sr:.3f} "
            "s: the file is truncated, or changed while it was read; repair it or wait until it is complete"
        )


_CLAIMED = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


_WARNED_TRUNCATED: set[tuple[str, int, int]] = set()  # (file, size, mtime) already warned of in this process
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                 "DOUBLE": 8}  # fmt: skip


def warn_truncated(path: str | os.PathLike, handle: sf.SoundFile) -> bool:
    """Warn, naming the file, when its header promises more audio data than the file holds (an interrupted
    recording or copy; libsndfile reads what there is). Returns whether the file is truncated; the warning is
    given once per file in a process, however often its header is read (a command reads it several times)."""
    found = _CLAIMED.search(handle.extra_info)
    if not found or int(found[2]) >= int(found[1]):
        return False
    claimed_bytes, held_bytes = int(found[1]), int(found[2])
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = (os.path.abspath(path), held_bytes, 0)
    if key in _WARNED_TRUNCATED:
        return True
    _WARNED_TRUNCATED.add(key)
    # bytes per frame: measured where there are frames, else from the encoding (a header alone gave "nan s")
    sample_bytes = _SAMPLE_BYTES.get(handle.subtype, 0)
    frame_bytes = held_bytes / handle.frames if handle.frames else sample_bytes * handle.channels
    promised = f"{claimed_bytes / frame_bytes / handle.samplerate:.3f} s" if frame_bytes else f"{claimed_bytes} bytes"
    logger.warning("%s: its header promises %s of audio but the file holds %.3f s (truncated: an interrupted "
                   "recording or copy); using what it holds", path, promised,
                   handle.frames / handle.samplerate)  # fmt: skip
    return True


def cancelled_downmix(y: np.ndarray) -> int | None:
    """The strongest channel of ``y`` ``(n_channels, n)`` when their average is :data:`CANCELLED_DB` or more below
    the channels' mean power (channels in opposite phase), else None (the average is fine)."""
    if y.ndim != 2 or y.shape[0] < 2:
        return None
    power = np.mean(np.square(y, dtype=np.float64), axis=1)
    mixed = float(np.mean(np.square(y.mean(axis=0), dtype=np.float64)))
    if power.max() == 0 or mixed >= power.mean() * 10 ** (-CANCELLED_DB / 10):
        return None
    return int(np.argmax(power))


def check_finite(y: np.ndarray, path: str | os.PathLike, sr: int, offset: int = 0, subtype: str = "") -> None:
    """Refuse a waveform holding NaN or infinite samples, naming the file and the time of the first one; of a
    64-bit ``subtype`` ("DOUBLE"), read as float32, they may be finite samples beyond float32's range."""
    bad = ~np.isfinite(y)
    if bad.any():
        first = offset + int(np.argmax(bad.any(axis=0) if bad.ndim == 2 else bad))
        beyond = " (or beyond float32's ±3.4e38: no recording is that loud)" if subtype == "DOUBLE" else ""
        raise SpeechkernError(
            f"{path}: holds {int(bad.sum())} NaN or infinite sample(s){beyond}, the first at {first / sr:.3f} s; "
            "repair or replace the file"
        )


def find_audio(root: str | os.PathLike, suffixes: tuple[str, ...] = READ_SUFFIXES) -> list[Path]:
    """All audio files below a folder (recursively, case-insensitive suffix; by default every format the loader
    reads, :data:`READ_SUFFIXES`), sorted for reproducibility. Symbolic links to nothing are left out with a
    logged warning naming them."""
    found, _, broken = scan_folder(root, suffixes)
    for link in broken:
        logger.warning("%s", broken_link_note(link))
    return found


def scan_folder(
    root: str | os.PathLike, suffixes: tuple[str, ...] = READ_SUFFIXES
) -> tuple[list[Path], list[Path], list[Path]]:
    """``(audio files, other files, broken links)`` below a folder, recursively: files split by case-insensitive
    suffix, and the symbolic links whose target does not exist (see :func:`broken_link_note`); all sorted."""
    root = Path(root)
    if not root.is_dir():
        what = FORMATS_HELP if suffixes == READ_SUFFIXES else "/".join(suffixes)
        raise SpeechkernError(f"{root}: no such folder; give a folder that holds {what} files")
    found, other, broken = [], [], []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            (found if p.suffix.lower() in suffixes else other).append(p)
        elif p.is_symlink() and not p.exists():
            broken.append(p)
    return found, other, broken


def broken_link_note(link: Path) -> str:
    """One line for a symbolic link whose target does not exist, which a folder search leaves out."""
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return f"{link}: a symbolic link to {target}, which does not exist; skipped (fix or remove the link)"


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise SpeechkernError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise SpeechkernError(f"{path}: is a folder, not an audio file")
    if not path.is_file():  # a FIFO or device is read twice (header, then blocks): it would hang
        raise SpeechkernError(f"{path}: is not a regular file (a pipe, device or socket); save the audio to a file")
