"""The shipped model (and any model or run given) beside its peers RNNoise and noisereduce: quality per SNR, speed.

Data: the held-out dev mixtures of benchmarks/shipped_model.py (the test talkers of recipes/general, noise from
the second halves of the recordings, at each SNR of --snrs), or with --pairs NOISY CLEAN a folder of noisy files
and a folder of their clean references (matched by relative path, as VoiceBank-DEMAND's noisy_testset_wav and
clean_testset_wav), grouped by the input SNR measured from the pair (10·log10(Σs²/Σ(x − s)²)) rounded to 5 dB.
Everything is scored at 16 kHz: STOI, ESTOI, wide-band PESQ and SI-SDR, means per SNR and over all, of the
noisy input and of each system's output; speed as × real time (audio seconds / wall seconds of the system's
calls, in this process, on --threads threads; model loading not counted).

Peers (pip install 'speechkern[peers]'; each is skipped with a message when it is not installed):
- RNNoise (Valin 2018) through pyrnnoise's bundled library: 48 kHz, 10 ms frames, so the input is resampled to
  48 kHz (soxr) and back. Its output lags its input by two frames (20 ms), which is removed before scoring.
- noisereduce (spectral gating, Sainburg 2020) with its defaults (non-stationary).

Writes table.md (the Markdown tables), results.json (per-file scores) and plot.png to --out.

    OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/peers.py --out /tmp/peers [--utterances 15]
    .venv/bin/python benchmarks/peers.py --pairs noisy_testset_wav clean_testset_wav --out /tmp/vb
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SR = 16000
METRICS = (("stoi", "STOI", "{:.3f}"), ("estoi", "ESTOI", "{:.3f}"), ("pesq", "PESQ-wb", "{:.2f}"),
           ("si_sdr", "SI-SDR (dB)", "{:.2f}"))  # fmt: skip
NOISY = "noisy input"
ALL = "all"
RNNOISE_RATE = 48000
RNNOISE_DELAY_FRAMES = 2  # one frame of look-ahead in its analysis window, one of overlap-add


def rnnoise() -> tuple[Callable | None, str]:
    """RNNoise as ``f(y, sr) -> y_hat`` (same length, aligned), or None and why it is skipped."""
    try:
        import ctypes

        from pyrnnoise import rnnoise as lib
    except (ImportError, OSError) as err:
        return None, f"RNNoise skipped: pyrnnoise is not installed ({err}); pip install 'speechkern[peers]'"
    from speechkern import audio

    frame = lib.FRAME_SIZE
    delay = RNNOISE_DELAY_FRAMES * frame
    pointer = ctypes.POINTER(ctypes.c_float)

    def run(y: np.ndarray, sr: int) -> np.ndarray:
        # RNNoise reads float samples in 16-bit units; the padding lets the delayed tail out.
        x = audio.resample(y, sr, RNNOISE_RATE) * 32768.0
        n = len(x)
        x = np.pad(x, (0, delay + (-(n + delay)) % frame)).astype(np.float32)
        out = np.empty_like(x)
        state = lib.create()
        try:
            for i in range(0, len(x), frame):
                block, dest = np.ascontiguousarray(x[i : i + frame]), out[i : i + frame]
                lib.lib.rnnoise_process_frame(state, dest.ctypes.data_as(pointer), block.ctypes.data_as(pointer))
        finally:
            lib.destroy(state)
        aligned = out[delay : delay + n] / 32768.0
        return fit(audio.resample(aligned, RNNOISE_RATE, sr), len(y))

    return run, ""


def noisereduce() -> tuple[Callable | None, str]:
    """noisereduce's spectral gating as ``f(y, sr) -> y_hat``, or None and why it is skipped."""
    try:
        import noisereduce as nr
    except ImportError as err:
        return None, f"noisereduce skipped: it is not installed ({err}); pip install 'speechkern[peers]'"

    def run(y: np.ndarray, sr: int) -> np.ndarray:
        return fit(np.asarray(nr.reduce_noise(y=y, sr=sr, n_jobs=1), dtype=np.float32), len(y))

    return run, ""


def model_labels(wheres: list[str]) -> list[str]:
    """A distinct column label for each --model: its folder's name, with as many parent folders as tell it apart
    from the others (``runs/a/models/kernel`` and ``runs/b/models/kernel``: ``a/models/kernel``, ...). Raises
    SystemExit for a folder given twice (its column would have replaced the first's)."""
    folders = [Path(os.path.abspath(w)) for w in wheres]
    seen: dict[Path, str] = {}
    for where, folder in zip(wheres, folders, strict=True):
        if folder in seen:
            raise SystemExit(f"--model {where}: given twice (as {seen[folder]}); give each model once")
        seen[folder] = where
    labels = []
    for i, folder in enumerate(folders):
        others = [f for j, f in enumerate(folders) if j != i]
        depth = next((d for d in range(1, len(folder.parts)) if all(f.parts[-d:] != folder.parts[-d:] for f in others)),
                     len(folder.parts))  # fmt: skip
        labels.append("/".join(folder.parts[-depth:]))
    return labels


def speechkern_model(where: str | None, clean_guard: bool = True, label: str | None = None) -> tuple[str, Callable]:
    """A speechkern model (a model folder or run directory; None: the shipped general model) as ``f(y, sr)``,
    with its column label (``speechkern <label>``; default: the folder's name)."""
    from speechkern.enhance import enhance_signal
    from speechkern.errors import SpeechkernError
    from speechkern.models.select import find_model, shipped_model_dir

    try:
        model, folder = find_model(where or shipped_model_dir())
    except SpeechkernError as err:
        raise SystemExit(f"--model {where}: {err}") from None
    if model.feature_config.sr != SR:  # before any work, not at the first file
        raise SystemExit(f"--model {folder}: a {model.feature_config.sr} Hz model; peers.py scores at {SR} Hz")
    name = "speechkern" if where is None else f"speechkern {label or Path(where).name}"

    def run(y: np.ndarray, sr: int) -> np.ndarray:
        return enhance_signal(model, y, clean_guard=clean_guard)

    return (name if clean_guard else f"{name} (no clean guard)"), run


def fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def pairs(noisy_dir: Path, clean_dir: Path, limit: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(group, noisy, clean) at 16 kHz for the files of ``noisy_dir`` with a namesake under ``clean_dir``."""
    from speechkern import audio

    for d in (noisy_dir, clean_dir):
        if not d.is_dir():
            raise SystemExit(f"--pairs {d}: no such folder; give the folder of noisy files, then of clean ones")
    found = [(f, clean_dir / f.relative_to(noisy_dir)) for f in audio.find_audio(noisy_dir)]
    matched = [(n, c) for n, c in found if c.is_file()]
    if not matched:
        raise SystemExit(f"--pairs: none of the {len(found)} audio files under {noisy_dir} has a namesake under "
                         f"{clean_dir}; the two folders must hold the same relative paths")  # fmt: skip
    alone = [str(n.relative_to(noisy_dir)) for n, c in found if not c.is_file()]
    if alone:  # said, not dropped silently: a table over fewer files than the folder holds
        print(f"--pairs: {len(alone)} of the {len(found)} noisy files have no namesake under {clean_dir} and are left "
              f"out: {', '.join(alone[:5])}{' …' if len(alone) > 5 else ''}", file=sys.stderr)  # fmt: skip
    out = []
    for n, c in matched[: limit or None]:
        x, s = audio.load(n, sr=SR)[0], audio.load(c, sr=SR)[0]
        if abs(len(x) - len(s)) > SR // 50:
            raise SystemExit(f"{n}: {len(x)} samples at 16 kHz against {len(s)} in {c}; the pair must have one length")
        m = min(len(x), len(s))
        x, s = x[:m], s[:m]
        speech = np.sum(s.astype(np.float64) ** 2)
        if speech == 0:  # no SNR, STOI nor SI-SDR against silence
            raise SystemExit(f"{c}: the clean reference of {n} is silent (all zeros); give its clean speech or "
                             "remove the pair")  # fmt: skip
        snr = 10 * np.log10(speech / max(np.sum((x - s).astype(np.float64) ** 2), 1e-20))
        out.append((f"{5 * round(snr / 5):g}", x, s))
    return out


def dev_mixtures(snrs: list[float], limit: int, max_seconds: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(SNR, mixture, clean) of benchmarks/shipped_model.py: held-out talkers, held-out noise halves."""
    from _common import DEV, ROOT, require_dev_data
    from shipped_model import test_mixtures

    from speechkern.recipe import load_recipe

    require_dev_data()
    recipe = load_recipe(ROOT / "recipes" / "general", [f"data.manifest={DEV / 'manifest.csv'}"])
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
        mixtures, _ = test_mixtures(recipe, snrs, max_seconds, limit, Path(tmp))
    return [(f"{snr:g}", mix, ref) for snr, mix, ref in mixtures]


def scores(clean: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from speechkern.metrics import speech_scores

    s = speech_scores(clean, y, SR, narrowband=False)
    return {"stoi": s.stoi, "estoi": s.estoi, "pesq": s.pesq, "si_sdr": s.si_sdr}


def group_order(groups: list[str]) -> list[str]:
    return sorted(set(groups), key=float) + [ALL]


def complete(row: dict, systems: list[str]) -> bool:
    """Whether every metric of the noisy input and of every system is a number for this file (PESQ fails on
    some, and STOI on too short or silent outputs)."""
    return all(np.isfinite(row[s][k]) for s in [NOISY, *systems] for k, _, _ in METRICS)


def summarise(rows: list[dict], systems: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean of each metric per group (and over all) per system over the same files: those with every score a
    number (:func:`complete`); ``n`` counts them and ``left_out`` the files with a NaN score. (Each metric was
    averaged over its own finite scores, so the "all" row's STOI and PESQ, and a system and the noisy input, could
    be means over different files.)"""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for group in group_order([r["group"] for r in rows]):
        sel = [r for r in rows if group in (ALL, r["group"])]
        kept = [r for r in sel if complete(r, systems)]
        table[group] = {
            s: {k: float(np.mean([r[s][k] for r in kept])) if kept else math.nan for k, _, _ in METRICS}
            for s in [NOISY, *systems]
        }
        table[group]["n"] = len(kept)
        table[group]["left_out"] = len(sel) - len(kept)
    return table


def _group_label(group: str, row: dict) -> str:
    left = f", {row['left_out']} left out" if row.get("left_out") else ""
    return f"{group} (n={row['n']}{left})"


def markdown(table, systems: list[str], speed: dict[str, float]) -> str:
    lines = ["| SNR (dB) | system | " + " | ".join(h for _, h, _ in METRICS) + " | × real time |",
             "|---|---|" + "---|" * (len(METRICS) + 1)]  # fmt: skip
    for group, row in table.items():
        for s in [NOISY, *systems]:
            cells = [fmt.format(row[s][k]) for k, _, fmt in METRICS]
            rate = f"{speed[s]:.0f}×" if s in speed else ""
            lines.append(f"| {_group_label(group, row)} | {s} | " + " | ".join(cells) + f" | {rate} |")
    lines += ["", "Change over the noisy input (STOI / PESQ-wb / SI-SDR dB):", "",
              "| SNR (dB) | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]  # fmt: skip
    for group, row in table.items():
        cells = [
            f"{row[s]['stoi'] - row[NOISY]['stoi']:+.3f} / {row[s]['pesq'] - row[NOISY]['pesq']:+.2f} / "
            f"{row[s]['si_sdr'] - row[NOISY]['si_sdr']:+.2f}"
            for s in systems
        ]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table, systems: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in table if g != ALL]
    x = [float(g) for g in groups]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    for ax, (k, title, _) in zip(axes, METRICS, strict=True):
        for s in [NOISY, *systems]:
            ax.plot(x, [table[g][s][k] for g in groups], marker="o", label=s, linestyle="--" if s == NOISY else "-")
        ax.set_xlabel("input SNR (dB)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    from speechkern.outputs import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for table.md, results.json and plot.png")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in a non-empty --out")
    parser.add_argument("--model", action="append", default=[], help="also score this model folder or run dir")
    parser.add_argument("--pairs", type=Path, nargs=2, metavar=("NOISY", "CLEAN"), help="score these pairs")
    parser.add_argument("--snrs", type=float, nargs="+", default=[-5.0, 0.0, 5.0, 10.0, 20.0])
    parser.add_argument("--utterances", type=int, default=0, help="utterances (0: all test utterances or pairs)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="dev utterances are cut to this length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-clean-guard-too", action="store_true",
                        help="also score the shipped model without its clean-input guard")  # fmt: skip
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # shipped_model, as when run as a script
        sys.path.insert(0, here)
    from shipped_model import check_mixture_options, write_json

    check_mixture_options(args.snrs, args.max_seconds, args.utterances)  # before the work, for --pairs too
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: expected at least 1 thread, such as 2")
    labels = model_labels(args.model)  # two folders named alike gave one column, the first model's scores lost

    import torch

    from speechkern.errors import SpeechkernError
    from speechkern.outputs import check_out_dir, write_text

    try:
        check_out_dir(args.out, args.overwrite)
    except SpeechkernError as err:
        raise SystemExit(str(err)) from None
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    runners: dict[str, Callable] = dict(
        [speechkern_model(None)]
        + [speechkern_model(m, label=label) for m, label in zip(args.model, labels, strict=True)]
    )
    if args.no_clean_guard_too:
        runners.update([speechkern_model(None, clean_guard=False)])
    try:  # a damaged file among the pairs or the dev data: one line naming it
        data = (pairs(*args.pairs, args.utterances) if args.pairs
                else dev_mixtures(args.snrs, args.utterances, args.max_seconds))  # fmt: skip
    except SpeechkernError as err:
        raise SystemExit(str(err)) from None
    skipped = []
    for name, factory in (("RNNoise", rnnoise), ("noisereduce", noisereduce)):
        run, why = factory()
        if run is None:
            skipped.append(why)
            print(why, file=sys.stderr)
        else:
            runners[name] = run
    systems = list(runners)

    rows, seconds, audio_s = [], dict.fromkeys(systems, 0.0), 0.0
    for i, (group, mix, ref) in enumerate(data):
        row = {"group": group, NOISY: scores(ref, mix)}
        for name, run in runners.items():
            started = time.perf_counter()
            y = run(mix, SR)
            seconds[name] += time.perf_counter() - started
            row[name] = scores(ref, y)
        audio_s += len(mix) / SR
        rows.append(row)
        print(f"\r{i + 1}/{len(data)} files", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    load_after = os.getloadavg()[0]

    table = summarise(rows, systems)
    speed = {s: audio_s / max(seconds[s], 1e-9) for s in systems}
    source = (
        f"pairs {args.pairs[0]} / {args.pairs[1]}"
        if args.pairs
        else f"held-out dev mixtures (recipes/general test talkers, second noise halves, ≤ {args.max_seconds:g} s)"
    )
    head = (f"{source}: {len(data)} files, {audio_s / 60:.1f} min; scored at 16 kHz; speed on {args.threads} "
            f"threads; load {load_before:.1f} before, {load_after:.1f} after")  # fmt: skip
    left_out = table[ALL]["left_out"]
    if left_out:
        head += (f"; {left_out} file(s) left out of every mean, a score of the noisy input or of a system being NaN "
                 "(results.json lists every file's scores)")  # fmt: skip
    text = head + "\n\n" + markdown(table, systems, speed)
    if skipped:
        text += "\n" + "\n".join(skipped) + "\n"
    print(text)
    write_text(args.out / "table.md", text)
    result = {"source": source, "systems": systems, "skipped": skipped, "speed": speed,
              "load": [load_before, load_after], "table": table, "files": rows}  # fmt: skip
    write_json(args.out / "results.json", result)  # NaN as null
    plot(table, systems, args.out / "plot.png")
    return 0


if __name__ == "__main__":
    from _common import run_main

    run_main(main)
