"""STFT analysis and resynthesis with the project's framing (SPEC §3, STFT domain).

Frame m is centred at sample m·hop_length and spans [m·hop − frame_length/2, m·hop + frame_length/2), zeros
outside the signal, so n_frames = 1 + n_samples // hop_length — the same frames as the cochleagram. The analysis
window is a periodic Hann window of frame_length samples (20 ms at 16 kHz), zero-padded to ``n_fft`` when
n_fft > frame_length (default n_fft = frame_length: 161 bins for 320-sample frames). Resynthesis is weighted
overlap-add (``torch.istft``: Hann synthesis window, divided by the summed squared windows), exact for an
unmodified spectrogram. A mask scales the mixture's magnitude and keeps its phase.

numpy in, numpy out; ``device`` selects where torch computes (``"cpu"``, ``"cuda"``, ...).
"""

from __future__ import annotations

import numpy as np
import torch

from speechkern.errors import SpeechkernError


def _n_fft(frame_length: int, n_fft: int | None) -> int:
    n_fft = int(n_fft or frame_length)
    if n_fft < frame_length:
        raise SpeechkernError(f"n_fft = {n_fft} is shorter than frame_length = {frame_length}; use n_fft >= frame")
    if frame_length < 2 or frame_length % 2:
        raise SpeechkernError(f"frame_length = {frame_length}: expected an even number of samples >= 2")
    return n_fft


def window(frame_length: int, *, device: str | torch.device = "cpu", dtype=torch.float32) -> torch.Tensor:
    """The analysis/synthesis window: periodic Hann of ``frame_length`` samples."""
    return torch.hann_window(frame_length, periodic=True, dtype=dtype, device=device)


def stft_tensor(y: torch.Tensor, frame_length: int = 320, hop_length: int = 160, n_fft: int | None = None):
    """STFT of a tensor (…, n_samples) → complex tensor (…, n_fft // 2 + 1, n_frames), on y's device."""
    n_fft = _n_fft(frame_length, n_fft)
    if hop_length < 1:
        raise SpeechkernError(f"hop_length = {hop_length}: expected a positive number of samples")
    return torch.stft(
        y,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=frame_length,
        window=window(frame_length, device=y.device, dtype=y.dtype),
        center=True,
        pad_mode="constant",  # zeros outside the signal, as the cochleagram frames
        return_complex=True,
    )


def _as_tensor(y: np.ndarray, device) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise SpeechkernError(f"expected a non-empty mono waveform (n_samples,), got shape {y.shape}")
    dtype = torch.float64 if y.dtype == np.float64 else torch.float32
    return torch.as_tensor(y, dtype=dtype, device=device)


def stft(
    y: np.ndarray,
    frame_length: int = 320,
    hop_length: int = 160,
    n_fft: int | None = None,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """Complex STFT (n_fft // 2 + 1, 1 + n_samples // hop_length) of mono ``y``; frame/hop/n_fft in samples.

    complex64 for float32 input, complex128 for float64 input.
    """
    return stft_tensor(_as_tensor(y, device), frame_length, hop_length, n_fft).cpu().numpy()


def istft(
    spec: np.ndarray,
    length: int,
    frame_length: int = 320,
    hop_length: int = 160,
    n_fft: int | None = None,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """Waveform of ``length`` samples from a complex STFT (n_fft // 2 + 1, n_frames) made by :func:`stft`."""
    n_fft = _n_fft(frame_length, n_fft)
    spec = np.asarray(spec)
    if spec.ndim != 2 or spec.shape[0] != n_fft // 2 + 1:
        raise SpeechkernError(f"STFT of shape {spec.shape}: expected ({n_fft // 2 + 1}, n_frames) for n_fft = {n_fft}")
    return istft_tensor(torch.as_tensor(spec, device=device), length, frame_length, hop_length, n_fft).cpu().numpy()


def istft_tensor(
    spec: torch.Tensor, length: int, frame_length: int = 320, hop_length: int = 160, n_fft: int | None = None
) -> torch.Tensor:
    """Inverse of :func:`stft_tensor`: waveform tensor (…, length) by weighted overlap-add."""
    n_fft = _n_fft(frame_length, n_fft)
    real_dtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
    return torch.istft(
        spec,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=frame_length,
        window=window(frame_length, device=spec.device, dtype=real_dtype),
        center=True,
        length=int(length),
    )


def power_spectrogram(
    y: np.ndarray,
    frame_length: int = 320,
    hop_length: int = 160,
    n_fft: int | None = None,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """|STFT|² (n_fft // 2 + 1, n_frames): the T-F energies of the STFT domain (squared waveform units)."""
    spec = stft_tensor(_as_tensor(y, device), frame_length, hop_length, n_fft)
    return (spec.real**2 + spec.imag**2).cpu().numpy()


def resynthesize(
    mixture: np.ndarray,
    mask: np.ndarray,
    frame_length: int = 320,
    hop_length: int = 160,
    n_fft: int | None = None,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """Apply an STFT-domain mask (n_fft // 2 + 1, n_frames) to ``mixture`` (magnitude scaled, noisy phase kept).

    Returns the float32 waveform with as many samples as the mixture.
    """
    x = _as_tensor(mixture, device)
    spec = stft_tensor(x, frame_length, hop_length, n_fft)
    m = torch.as_tensor(np.asarray(mask), device=device, dtype=x.dtype)
    if tuple(m.shape) != tuple(spec.shape):
        raise SpeechkernError(
            f"mask of shape {tuple(m.shape)} does not fit a {x.shape[-1]}-sample mixture: expected "
            f"{tuple(spec.shape)} (bins, 1 + n_samples // {hop_length})"
        )
    if not bool(torch.isfinite(m).all()):
        raise SpeechkernError("mask holds NaN or infinite values")
    out = istft_tensor(spec * m, x.shape[-1], frame_length, hop_length, n_fft)
    return out.cpu().numpy().astype(np.float32)
