"""Speed of feature extraction (the complementary set, 246 values per frame with deltas) on CPU.

Takes about 60 s of development speech (../shared/data/dev), mixes each utterance with a segment of a dev noise
recording at 0 dB, and times the ways of extracting features for a batch:

  one thread      one utterance after another on one thread (``extract_batch(n_jobs=1)``)
  channels        one utterance after another, the 64 gammatone channels spread over ``--jobs`` threads
  utterances      ``extract_batch``: utterances spread over ``--jobs`` threads, one thread each (the default)
  processes       ``extract_batch(backend="processes")``: utterances spread over worker processes

It prints the real-time factor (seconds of audio per second of wall time; the target is at least 100 on two
cores) and the load average, since other work on the machine slows every number down.

    .venv/bin/python benchmarks/feature_speed.py [--seconds 60] [--repeats 8] [--jobs 2] [--kind complementary]
"""

from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np
import soundfile as sf
from _common import DEV, require_dev_data

from speechkern import features, synth


def load_mixtures(seconds: float, sr: int = 16000) -> list[np.ndarray]:
    """Dev utterances (the first of each speaker folder in turn) mixed with dev noise at 0 dB."""
    with open(DEV / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    clean = [r["path"] for r in rows if r["kind"] == "clean" and int(r["sr"]) == sr and float(r["seconds"]) < 12]
    noises = [sf.read(DEV / r["path"], dtype="float32")[0] for r in rows if r["kind"] == "noise"]
    rng = np.random.default_rng(0)
    mixtures, total = [], 0.0
    for i, path in enumerate(clean[:: max(1, len(clean) // 40)]):
        s, file_sr = sf.read(DEV / path, dtype="float32")
        if file_sr != sr or s.ndim != 1:
            continue
        noise = noises[i % len(noises)]
        noise = noise if noise.ndim == 1 else noise.mean(axis=1)
        start = int(rng.integers(0, len(noise) - len(s)))
        n = noise[start : start + len(s)].astype(np.float64)
        n *= np.sqrt(np.sum(s.astype(np.float64) ** 2) / max(np.sum(n**2), 1e-20))
        mixtures.append((s + n).astype(np.float32))
        total += len(s) / sr
        if total >= seconds:
            break
    return mixtures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of audio to process")
    parser.add_argument("--repeats", type=int, default=8, help="interleaved timed rounds")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes / threads")
    parser.add_argument("--kind", default="complementary", help="feature set")
    args = parser.parse_args(argv)
    require_dev_data()
    config = features.FeatureConfig(kind=args.kind)
    signals = load_mixtures(args.seconds, config.sr)
    audio_s = sum(len(y) for y in signals) / config.sr
    print(
        f"{len(signals)} mixtures, {audio_s:.1f} s of audio, features {config.kind}: {features.base_dim(config)}/frame"
    )
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.2f}")

    t0 = time.perf_counter()
    features.extract_batch(signals, config, n_jobs=args.jobs, backend="processes")  # starts the workers
    print(f"worker processes' start-up and first batch: {time.perf_counter() - t0:.2f} s")
    features.extract_batch(signals[:1], config, n_jobs=1)  # warm caches (filter designs, librosa import)
    runs = {
        "one thread": lambda: features.extract_batch(signals, config, n_jobs=1),
        "channels": lambda: [features.extract(y, config, n_threads=args.jobs) for y in signals],
        "utterances": lambda: features.extract_batch(signals, config, n_jobs=args.jobs),
        "processes": lambda: features.extract_batch(signals, config, n_jobs=args.jobs, backend="processes"),
    }
    # Interleaved rounds (every way once per round, rotating the order) so that changing load from other
    # processes hits all ways alike; best and median over rounds are reported.
    names = list(runs)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            cpu0, t0 = time.process_time(), time.perf_counter()
            runs[name]()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - cpu0)
    results = {name: min(w) for name, w in walls.items()}
    for name in names:
        best, median = min(walls[name]), float(np.median(walls[name]))
        note = "" if name == "processes" else f", CPU time here {np.median(cpus[name]):.3f} s"
        print(
            f"{name:>10}: best {best:6.3f} s = {audio_s / best:6.1f}x real time; "
            f"median {median:6.3f} s = {audio_s / median:6.1f}x{note}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    synth.synthesize(synth.TALKERS[0], 0.5, seed=0)  # warm up lazy imports
    t0 = time.perf_counter()
    synth.synthesize(synth.TALKERS[2], 60.0, seed=1)
    print(f"demo synthesiser: 60 s of speech in {time.perf_counter() - t0:.2f} s (one core)")
    best = max(results, key=lambda k: audio_s / results[k])
    print(f"best: {best}, real-time factor {audio_s / results[best]:.1f}x (target >= 100x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
