"""Device selection shared by every computation: ``"auto"`` means CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from speechkern.errors import SpeechkernError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A torch device from ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, checked to exist."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SpeechkernError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpeechkernError(f"device {device!r}: no CUDA GPU is visible here; use --device cpu or auto")
    return dev
