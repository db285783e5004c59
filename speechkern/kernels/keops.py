"""The KeOps backend: whether pykeops is usable, where it compiles, and the KeOps kernel product."""

from __future__ import annotations

import os

import torch

from speechkern.errors import SpeechkernError
from speechkern.paths import default_cache_dir


def configure_keops_cache() -> str:
    """Point KeOps' compile cache at a writable folder before pykeops is imported; returns the folder.

    ``$KEOPS_CACHE_FOLDER`` wins when set; otherwise ``<speechkern cache>/keops`` (``$SPEECHKERN_CACHE`` or
    ``~/.cache/speechkern``), or a temporary folder when that is not writable (a read-only home in a container).
    """
    folder = os.environ.get("KEOPS_CACHE_FOLDER")
    if not folder:
        folder = str(default_cache_dir() / "keops")
        try:
            os.makedirs(folder, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(folder)
        except OSError:
            import tempfile

            folder = tempfile.mkdtemp(prefix="speechkern-keops-")
        os.environ["KEOPS_CACHE_FOLDER"] = folder
    return folder


def keops_available() -> bool:
    """True when pykeops imports (it compiles its formulas on first use, which needs a C++ compiler)."""
    configure_keops_cache()
    try:
        import pykeops.torch  # noqa: F401
    except Exception:  # pykeops raises a variety of errors when its toolchain is missing
        return False
    return True


def keops_mm(X: torch.Tensor, Z: torch.Tensor, W: torch.Tensor, shape: float, bandwidth: float) -> torch.Tensor:
    """K(X, Z) @ W for the exponential power kernel (shape γ, bandwidth σ) as a KeOps LazyTensor reduction,
    ``(-(sqdist ** (γ/2)) / σ).exp() @ W``: X (n × features), Z (m × features), W (m × k) → (n × k) in X's dtype.

    Distances come from differences, so this backend needs neither the mean shift nor the slack of the tiles.
    Raises :class:`SpeechkernError` when pykeops cannot be used.
    """
    try:
        configure_keops_cache()
        from pykeops.torch import LazyTensor
    except Exception as exc:  # pykeops missing or broken toolchain
        raise SpeechkernError(
            f"kernel backend 'keops': pykeops cannot be used here ({exc}); choose backend='torch'"
        ) from exc
    x = LazyTensor(X.contiguous()[:, None, :])
    z = LazyTensor(Z.to(X.dtype).contiguous()[None, :, :])
    d2 = x.sqdist(z)
    if shape == 2.0:
        powered = d2
    elif shape == 1.0:
        powered = d2.sqrt()
    else:
        powered = d2 ** (shape / 2.0)  # a float exponent is a runtime parameter: no recompilation
    K = (-powered / bandwidth).exp()
    return K @ W.contiguous()
