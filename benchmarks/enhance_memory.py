"""Peak memory of `speechkern enhance` against the recording's length: it should not grow with the length.

Generates recordings of several lengths (tone bursts in white noise, 16 kHz mono, written block by block), then
enhances each through the command line in a child process and prints its wall time, the speed against real
time, the peak resident memory (ru_maxrss: everything resident, shared library pages included) and the peak
private memory (RssAnon of /proc/PID/status, sampled every 20 ms). The baseline measured in the same run is a
10-second recording: the ratio column is each peak over the baseline's. Goal: peak resident memory ≤ 1 GB for
any length, and no growth with the length. The model is a tiny demo run trained first (no data needed), or
any run given with --model.

    .venv/bin/python benchmarks/enhance_memory.py [--minutes 10 60] [--model RUN] [--chunk-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from _common import ROOT

SPEECHKERN = [sys.executable, "-m", "speechkern_cli.main"]
SR = 16000
TINY = [
    "data.n_train=6", "data.n_val=2", "data.n_test=2", "data.generated_noise_s=20", "data.max_utterance_s=3",
    "kernel.subbands=2", "kernel.epochs=2", "train.max_train_frames=600", "train.max_val_frames=200",
]  # fmt: skip


def run(argv: list[str]) -> tuple[float, int, int]:
    """Run a command; return its wall seconds, peak resident memory and peak private memory, in bytes."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_anon = [0]
    threading.Thread(target=_sample_anon, args=(proc.pid, peak_anon), daemon=True).start()
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{output}")
    return seconds, usage.ru_maxrss * 1024, peak_anon[0]


def _sample_anon(pid: int, peak: list[int]) -> None:
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        time.sleep(0.02)


def write_recording(path: Path, seconds: float, block_s: float = 10.0) -> None:
    """Tone bursts (a stand-in for speech) in white noise, written ``block_s`` seconds at a time."""
    rng = np.random.default_rng(0)
    n, block = int(seconds * SR), int(block_s * SR)
    with sf.SoundFile(path, "w", SR, 1, "PCM_16") as f:
        for start in range(0, n, block):
            t = np.arange(start, min(start + block, n)) / SR
            bursts = 0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
            f.write((bursts + 0.05 * rng.standard_normal(len(t))).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--model", type=Path, default=None, help="a run directory (default: train a tiny demo run)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="speechkern-enhance-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = work / "run"
        sets = [a for s in TINY for a in ("--set", s)]
        seconds, _, _ = run([*SPEECHKERN, "train", str(ROOT / "recipes" / "demo"), "--out", str(model), *sets,
                             "--models", "kernel", "--quiet", "--overwrite"])  # fmt: skip
        print(f"trained a tiny demo model in {seconds:.0f} s", flush=True)
    print(f"enhancing generated 16 kHz recordings on {os.cpu_count()} CPU cores, --chunk-seconds "
          f"{args.chunk_seconds:g}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| length | seconds | × real time | peak resident | peak private | resident / baseline |")
    print("|---|---|---|---|---|---|", flush=True)
    baseline = None
    for minutes in [1 / 6, *args.minutes]:
        noisy, out = work / f"noisy-{minutes:g}min.wav", work / f"enhanced-{minutes:g}min.wav"
        write_recording(noisy, minutes * 60)
        seconds, peak, anon = run([*SPEECHKERN, "enhance", str(noisy), "--model", str(model), "-o", str(out),
                                   "--chunk-seconds", str(args.chunk_seconds), "--overwrite", "--quiet"])  # fmt: skip
        baseline = baseline or peak
        length = "10 s (baseline)" if minutes < 1 else f"{minutes:g} min"
        print(f"| {length} | {seconds:.1f} | {minutes * 60 / seconds:.1f}× | {peak / 2**30:.2f} GB | "
              f"{anon / 2**30:.2f} GB | {peak / baseline:.2f} |", flush=True)  # fmt: skip
        noisy.unlink()
        out.unlink()
    print(f"\nload average after: {os.getloadavg()[0]:.1f}; goal: peak resident ≤ 1 GB at every length, ratio ≈ 1")


if __name__ == "__main__":
    main()
