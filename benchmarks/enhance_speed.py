"""Real-time factor and peak memory of `speechkern enhance` on a 10-minute recording, on this machine's CPUs.

Trains two kernel models on ../shared/data/dev speech in speech-shaped noise (the folder recipe, small
settings): a full EigenPro 2 model (every one of N training frames is a centre) and a compact EigenPro 3 model
(a few thousand centres trained on more frames). Then enhances one 10-minute mixture of dev speech and dev noise
with each, through the command line in a child process, and prints seconds, the speed as a multiple of real
time, and the child's peak resident memory. Goals: the compact model at least 20× faster than real time, peak
memory under 2 GB.

    .venv/bin/python benchmarks/enhance_speed.py [--minutes 10] [--full-frames 10000] [--centers 3000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DEV, ROOT, require_dev_data

SPEECHKERN = [sys.executable, "-m", "speechkern_cli.main"]


def run(argv: list[str]) -> tuple[float, int]:
    """Run a command; return its wall seconds and peak resident memory in bytes (from wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    output = proc.stdout.read() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{output}")
    return seconds, usage.ru_maxrss * 1024


def long_mixture(path: Path, minutes: float) -> None:
    """Dev speech files back to back, mixed at 0 dB with dev noise recordings looped to the same length."""
    from speechkern import audio
    from speechkern.mixtures import mix_at_snr

    files = audio.find_audio(DEV / "clean")
    rng = np.random.default_rng(0)
    parts, total = [], int(minutes * 60 * 16000)
    for i in rng.permutation(len(files)):
        parts.append(audio.load(files[i], sr=16000)[0])
        if sum(len(p) for p in parts) >= total:
            break
    speech = np.concatenate(parts)[:total]
    noise = np.concatenate([audio.load(f, sr=16000)[0] for f in audio.find_audio(DEV / "noise")])
    noise = np.tile(noise, int(np.ceil(total / len(noise))))[:total]
    mixture, _, _ = mix_at_snr(speech, noise, 0.0)
    audio.save(path, mixture / max(1.0, float(np.abs(mixture).max()) / 0.99), 16000, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--full-frames", type=int, default=10000, help="training frames = centres, full model")
    parser.add_argument("--centers", type=int, default=3000, help="centres of the compact model")
    parser.add_argument("--compact-frames", type=int, default=30000, help="training frames, compact model")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    require_dev_data()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="speechkern-enhance-bench-"))
    os.environ.setdefault("SPEECHKERN_CACHE", str(work / "cache"))
    common = [
        "--set", f"data.clean_dir={DEV / 'clean'}", "--set", "data.noises=[\"ssn\"]", "--set", "data.n_train=150",
        "--set", "data.n_val=15", "--set", "data.n_test=5", "--set", "kernel.autotune=false",
        "--set", "kernel.subbands=1", "--set", "kernel.bandwidth=45", "--set", "kernel.epochs=4",
        "--models", "kernel", "--quiet", "--overwrite",
    ]  # fmt: skip
    models = {
        "full": ["--set", f"train.max_train_frames={args.full_frames}"],
        "compact": [
            "--set",
            f"train.max_train_frames={args.compact_frames}",
            "--set",
            f"kernel.centers={args.centers}",
        ],
    }
    for name, extra in models.items():
        seconds, _ = run([*SPEECHKERN, "train", str(ROOT / "recipes" / "folder"), "--out", str(work / name), *common,
                          *extra])  # fmt: skip
        print(f"trained {name} model in {seconds:.0f} s", flush=True)

    noisy = work / "long.wav"
    long_mixture(noisy, args.minutes)
    audio_s = args.minutes * 60
    print(f"\nenhancing {audio_s / 60:.0f} minutes of 16 kHz audio on {os.cpu_count()} CPU cores")
    print("| model | centres | seconds | × real time | peak memory |\n|---|---|---|---|---|")
    for name in models:
        from speechkern.models.io import MaskModel

        model = MaskModel.load(work / name / "models" / "kernel")
        centres = int(model.estimators[0].centers_.shape[0])
        seconds, peak = run([*SPEECHKERN, "enhance", str(noisy), "--model", str(work / name), "-o",
                             str(work / f"{name}_enhanced.wav"), "--overwrite", "--quiet"])  # fmt: skip
        print(f"| {name} | {centres} | {seconds:.1f} | {audio_s / seconds:.1f}× | {peak / 2**30:.2f} GB |", flush=True)
    print("\ngoals: compact ≥ 20× real time, peak memory < 2 GB")


if __name__ == "__main__":
    main()
