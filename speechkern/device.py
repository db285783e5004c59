"""Device selection shared by every computation: ``"auto"`` means CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from speechkern.errors import SpeechkernError

KINDS = "auto, cpu, cuda or cuda:N"


def available_devices() -> list[str]:
    """The devices this machine offers: ``["cpu", "cuda:0", …]`` (one entry per visible CUDA GPU)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(f"cuda:{i}" for i in range(count))]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A torch device from ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, checked to exist.

    Raises SpeechkernError naming the device when it is none of these (``"gpu"``, ``"mps"``, ``"meta"``) or is not
    on this machine (``"cuda"`` without a visible GPU, ``"cuda:3"`` with two), and listing the devices that are.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise SpeechkernError(f"device {str(device)!r}: unknown; expected {KINDS} (devices here: {', '.join(here)})")
    if dev.type == "cuda" and (len(here) == 1 or (dev.index is not None and f"cuda:{dev.index}" not in here)):
        what = "no CUDA GPU is visible here" if len(here) == 1 else f"this machine has {len(here) - 1} CUDA GPU(s)"
        raise SpeechkernError(f"device {str(device)!r}: not available, {what} (devices here: {', '.join(here)}); "
                              "choose one of them, or auto")  # fmt: skip
    return dev
