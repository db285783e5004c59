"""Memory a model file implies, bounded before any work: a model is trusted as far as the machine can hold it.

A model folder's configuration can be consistent with its weights and still ask for absurd sizes (a feature
context of 20 000 frames makes every 5 s block 20 GiB); :func:`check_model_memory` refuses such a model in one line.
"""

from __future__ import annotations

import math
import numbers
import os

from speechkern.errors import SpeechkernError
from speechkern.outputs import format_bytes

# The largest seed an experiment takes: scikit-learn's random_state is at most 2**32 − 1, and some draw with seed + 1.
MAX_SEED = 2**32 - 2
# The share of the machine's memory one enhancement block may take.
BUDGET_SHARE = 0.5


def memory_budget() -> int:
    """Bytes one enhancement block may use: :data:`BUDGET_SHARE` of the physical memory (8 GB where unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 10**9
    return int(total * BUDGET_SHARE)


def check_network(subject: str, n_weights: int, copies: int, remedy: str) -> None:
    """Refuse, before it is built, a network whose ``n_weights`` float32 weights, ``copies`` times over (weights,
    gradients, optimiser state, copies kept), exceed :func:`memory_budget`: a width the allocator grants can
    take minutes to initialise, then end in swap or the kernel's out-of-memory kill with no word. Raises
    SpeechkernError naming the ``subject`` (the setting and its value) and the ``remedy``."""
    need, budget = 4 * n_weights * copies, memory_budget()
    if need > budget:
        raise SpeechkernError(f"{subject}: the network's {n_weights:.3g} weights need about {format_bytes(need)} to "
                              f"train, over the {format_bytes(budget)} this machine allows; {remedy}")  # fmt: skip


def mlp_weights(widths: list[int]) -> int:
    """Weights of a fully connected network whose layers have ``widths`` units (inputs first, outputs last)."""
    return sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))


DNN_COPIES = 5  # the DNN baseline holds its weights, gradients, Adam's two moments and the best epoch's copy


def is_number(value) -> bool:
    """A real number (NumPy's too), not a bool nor a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite real number."""
    return is_number(value) and math.isfinite(value)


def seconds(name: str, value, ok: bool, expected: str) -> float:
    """``value`` as a float when ``ok``, else SpeechkernError naming ``name``, the value and what was ``expected``."""
    if not ok:
        shown = f"{value:g}" if is_number(value) else repr(value)
        raise SpeechkernError(f"{name}={shown}: expected {expected}")
    return float(value)


# The shortest block: each block is enhanced with a second of context on each side (enhance.MARGIN_S), so shorter
# blocks multiply the work for little memory saved (a 3.3-s file: the same time at 1 s, 2.3× at 0.1 s, 18× at 0.01 s).
MIN_CHUNK_S = 1.0
# Longer than any recording (31 years): a chunk beyond it is one block all the same, and its sample count stays an
# integer (1.8e308 s overflowed int() in an OverflowError traceback).
MAX_CHUNK_S = 1e9


def chunk_seconds(chunk_s) -> float:
    """The block length in seconds, refused unless a finite number ≥ :data:`MIN_CHUNK_S` (0 or less meant one hop
    per block; 0.001 s worked, about 60 times slower than the default); at most :data:`MAX_CHUNK_S`, longer than
    any recording (a longer one is taken as that).

    Raises SpeechkernError naming the value for anything else: 0, negatives, NaN, infinities, bools, strings.
    """
    ok = is_real(chunk_s) and chunk_s > 0
    value = seconds("chunk_s", chunk_s, ok, "a finite number of seconds above 0, such as 30")
    if value < MIN_CHUNK_S:
        raise SpeechkernError(f"chunk_s={value:g}: expected at least {MIN_CHUNK_S:g} s, such as 30 (each block is "
                              "enhanced with about a second of context on each side, so shorter blocks multiply the "
                              "time, 18 times at 0.01 s, and save little memory)")  # fmt: skip
    return min(value, MAX_CHUNK_S)


def block_bytes(model, chunk_s: float, margin_s: float) -> dict[str, int]:
    """The largest arrays of enhancing one block of ``chunk_s`` seconds plus ``margin_s`` on each side, in bytes,
    by what sets them: the model inputs (inputs per frame × frames, the feature context included), the
    filterbank or STFT output, and the widest DNN layer. float32 inputs, float64 filterbank outputs."""
    fc = model.feature_config
    from speechkern.features import input_dim

    samples = math.ceil((chunk_s + 2 * margin_s) * fc.sr)
    frames = samples // max(1, fc.hop_length) + 1
    n_inputs = input_dim(fc)
    if model.transform is not None:
        n_inputs = max(n_inputs, model.transform.out_dim)
    sizes = {
        f"features.context = {fc.context}: {n_inputs} inputs per frame × {frames} frames": 4 * n_inputs * frames * 2,
        f"features.n_channels = {fc.n_channels} filterbank channels × {samples} samples": 8 * fc.n_channels * samples,
        f"features.n_fft = {fc.n_fft} × {frames} frames": 8 * (fc.n_fft // 2 + 1) * frames,
    }
    widths = [int(w) for est in model.estimators for w in (getattr(est, "hidden", None) or [])]
    if widths:
        sizes[f"a DNN layer of {max(widths)} units × {frames} frames"] = 4 * max(widths) * frames
    return sizes


def check_model_memory(
    model,
    where: str | os.PathLike,
    chunk_s: float = 30.0,
    margin_s: float = 1.0,
    budget: int | None = None,
    longest_s: float = math.inf,
) -> None:
    """Refuse a model whose blocks would not fit ``budget`` bytes (default :func:`memory_budget`).

    model: a loaded :class:`speechkern.models.io.MaskModel`; where: its folder, for the message; chunk_s, margin_s:
    the block and overlap of :func:`speechkern.enhance.enhance_file`, in seconds; longest_s: the longest input in
    seconds (a block is never longer than its file).
    Raises SpeechkernError naming the folder, the configuration value that sets the size, the size and the budget,
    and whether a shorter ``chunk_s`` would fit; and, from :func:`chunk_seconds`, for a ``chunk_s`` that is not a
    positive finite number.
    """
    chunk_s = min(chunk_seconds(chunk_s), longest_s)
    margin_s = min(margin_s, longest_s)  # the margins lie within the file too (10¹² s was blamed on the model)
    budget = memory_budget() if budget is None else budget
    sizes = block_bytes(model, chunk_s, margin_s)
    total = sum(sizes.values())
    if total <= budget:
        return
    cause = max(sizes, key=sizes.get)
    shortest = sum(block_bytes(model, 1.0, margin_s).values())
    fix = (
        "pass a smaller chunk_s"
        if shortest <= budget and chunk_s > 1.0
        else "the file asks for more than any speech model needs: check where it came from, or retrain it"
    )
    raise SpeechkernError(
        f"{where}: enhancing with this model needs about {format_bytes(total)} per {chunk_s:g} s block ({cause}), "
        f"more than the {format_bytes(budget)} allowed; {fix}"
    )
