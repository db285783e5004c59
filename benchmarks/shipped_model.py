"""The shipped general model on held-out dev talkers and held-out noise halves: quality per SNR, and speed.

Test talkers: the test split of recipes/general (talkers none of whose utterances the model trained on). Each
test utterance (cut to --max-seconds) is mixed at every SNR of --snrs with one noise drawn at random from the
recipe's noises (the dev recordings it may use, speech-shaped noise and babble made from its training speech),
taken from the second half of the recording, which training never saw. STOI, ESTOI, wide-band PESQ and SI-SDR
of the noisy input and of the enhanced output, averaged per SNR. Speed: --speed-minutes of those mixtures
back to back, enhanced in this process on --threads threads (features, mask and resynthesis; start-up not
counted), as seconds per minute of audio and × real time.

Goals (issues on the shipped model): at 0 dB, STOI +0.05 and PESQ-wb +0.3 over the noisy input; at 20 dB, no
loss in STOI or PESQ-wb and SI-SDR within 1 dB; enhancement ≥ 50× real time on 2 cores.

``--split val`` scores the validation talkers (first noise halves) instead, for choosing between models without
looking at the test split; ``--no-clean-guard`` scores the mask alone; ``--speed-minutes 0`` skips the speed run.

    .venv/bin/python benchmarks/shipped_model.py [--model DIR] [--snrs -5 0 5 10 20] [--json FILE]
    .venv/bin/python benchmarks/shipped_model.py --split val --no-clean-guard --speed-minutes 0 --model DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DEV, ROOT, require_dev_data

METRICS = ("stoi", "estoi", "pesq", "si_sdr")
MIN_SPEED = 0.5  # minutes: one 30-s block of enhance_signal at least
MIN_SECONDS = 1.0  # STOI analyses 384 ms segments and PESQ needs speech to align: shorter cuts score nothing


def check_mixture_options(snrs: list[float], max_seconds: float, utterances: int) -> None:
    """Refuse, in one line naming the option, values that would fail late or silently change the mixtures (a
    negative --utterances or --max-seconds slices from the end; a repeated SNR is averaged with itself; 1e300 dB
    overflowed the noise gain in an OverflowError traceback)."""
    from speechkern.recipe import MAX_SNR_DB  # the recipes' bound, for the same reason

    if not all(math.isfinite(s) and abs(s) <= MAX_SNR_DB for s in snrs) or len(set(snrs)) != len(snrs):
        raise SystemExit(f"--snrs {' '.join(f'{s:g}' for s in snrs)}: expected distinct finite SNRs in dB from "
                         f"{-MAX_SNR_DB:g} to {MAX_SNR_DB:g}, such as -5 0 5 10 20")  # fmt: skip
    if not (math.isfinite(max_seconds) and max_seconds >= MIN_SECONDS):
        raise SystemExit(f"--max-seconds {max_seconds:g}: expected at least {MIN_SECONDS:g} s of each utterance, "
                         "such as 10")  # fmt: skip
    if utterances < 0:
        raise SystemExit(f"--utterances {utterances}: expected a count of utterances, or 0 for all of them")


def check_output(option: str, path: Path | None, overwrite: bool = False) -> None:
    """Refuse an output file that is a folder, whose folder is missing, or that exists without ``overwrite``,
    before the work whose results it would hold."""
    if path is not None and path.is_dir():  # even with --overwrite: a folder is not replaced by a file
        raise SystemExit(f"{option} {path}: is a folder; name a file for the results")
    if path is not None and not path.parent.is_dir():
        raise SystemExit(f"{option} {path}: the folder {path.parent} does not exist; create it or choose another")
    if path is not None and path.exists() and not overwrite:
        raise SystemExit(f"{option} {path}: exists already; choose another name or pass --overwrite to replace it")


def json_safe(value):
    """``value`` with every NaN or infinite float as None: JSON has no NaN, and json.dumps wrote one that strict
    readers (jq, JavaScript) refuse (a PESQ that failed, a mean over no files)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file renamed into place), NaN as null."""
    from speechkern.outputs import atomic_write

    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_model_or_exit(folder: str | None):
    """(model folder, model) of ``--model`` (a model folder, or a run directory: its first model, as enhance takes
    it), or of the shipped model; a folder that is neither stops in one line."""
    from speechkern.errors import SpeechkernError
    from speechkern.models.select import find_model, shipped_model_dir

    where = Path(folder) if folder else shipped_model_dir()
    try:
        model, model_dir = find_model(where)
    except SpeechkernError as err:
        raise SystemExit(f"--model {where}: {err}") from None
    return model_dir, model


def check_rate(model_dir: Path, model, sr: int) -> None:
    """Refuse a model of another sample rate than the recipe's mixtures (it would be fed them as its own)."""
    if model.feature_config.sr != sr:
        raise SystemExit(f"--model {model_dir}: the model is for {model.feature_config.sr} Hz audio, the dev "
                         f"mixtures are {sr} Hz; score a {sr} Hz model")  # fmt: skip


def test_mixtures(recipe, snrs: list[float], max_seconds: float, limit: int, workdir: Path, split: str = "test"):
    """(snr, mixture, clean) for every held-out test utterance × SNR, noise from the held-out halves (``split``
    "val": the validation utterances, noise from the first halves, for choices made before testing)."""
    from speechkern import audio
    from speechkern.corpora import load_splits
    from speechkern.dataset import prepare_noises
    from speechkern.mixtures import draw_mixture

    check_mixture_options(snrs, max_seconds, limit)
    data = recipe.data
    splits = load_splits(data, workdir)
    noises = prepare_noises(recipe, splits["train"], workdir)
    noise_audio = {name: audio.load(path, sr=data.sr)[0] for name, path in noises.items()}
    names = sorted(noises)
    rng = np.random.default_rng(1234)
    out = []
    for utt in splits[split][: limit or None]:
        clean = audio.load(utt.path, sr=data.sr)[0][: int(max_seconds * data.sr)]
        for snr in snrs:
            name = names[int(rng.integers(len(names)))]
            m = draw_mixture(mixture_id=f"{utt.id}__{name}_{snr:g}dB", split=split, clean_path=utt.path,
                             clean=clean, noise_path=noises[name], noise_name=name, noise=noise_audio[name],
                             snr_db=snr, seed=int(rng.integers(2**31)), sr=data.sr, talker=utt.talker)  # fmt: skip
            mix, ref, _ = m.build_from(clean, noise_audio[name])
            out.append((snr, mix, ref))
    return out, splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or run directory [default: the shipped model]")
    parser.add_argument("--snrs", type=float, nargs="+", default=[-5.0, 0.0, 5.0, 10.0, 20.0])
    parser.add_argument("--utterances", type=int, default=0, help="test utterances (0: the whole test split)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="test utterances are cut to this length")
    parser.add_argument("--speed-minutes", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="val: the validation talkers and first noise halves, for choosing a model [test]",
    )
    parser.add_argument("--no-clean-guard", action="store_true", help="score the model without its clean-input guard")
    parser.add_argument(
        "--atten-lim-db",
        type=float,
        default=None,
        help="enhance with this attenuation limit in dB (as speechkern enhance --atten-lim-db)",
    )
    args = parser.parse_args(argv)
    check_mixture_options(args.snrs, args.max_seconds, args.utterances)
    if not (math.isfinite(args.speed_minutes) and (args.speed_minutes == 0 or args.speed_minutes >= MIN_SPEED)):
        raise SystemExit(f"--speed-minutes {args.speed_minutes:g}: expected at least {MIN_SPEED:g} minutes of audio "
                         "to time (shorter runs time the start of a call, not enhancement), such as 2, or 0 to skip "
                         "the speed run")  # fmt: skip
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: expected at least 1 thread, such as 2")
    if args.atten_lim_db is not None and not args.atten_lim_db >= 0:
        raise SystemExit(f"--atten-lim-db {args.atten_lim_db:g}: expected dB ≥ 0, such as 20")
    if args.atten_lim_db == math.inf:  # no limit, as enhance takes it; JSON has no infinity
        args.atten_lim_db = None
    check_output("--json", args.json, args.overwrite)
    model_dir, model = load_model_or_exit(args.model)
    require_dev_data()
    from speechkern.errors import SpeechkernError

    try:
        score(args, model_dir, model)
    except SpeechkernError as err:
        raise SystemExit(str(err)) from None
    return 0


def score(args: argparse.Namespace, model_dir: Path, model) -> None:
    """Print (and with --json write) the quality table, the speed and the goals of ``model``."""
    import torch

    from speechkern.enhance import enhance_signal
    from speechkern.metrics import speech_scores
    from speechkern.recipe import load_recipe

    torch.set_num_threads(args.threads)
    recipe = load_recipe(ROOT / "recipes" / "general", [f"data.manifest={DEV / 'manifest.csv'}"])
    check_rate(model_dir, model, recipe.data.sr)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="shipped-bench-") as tmp:
        mixtures, splits = test_mixtures(recipe, args.snrs, args.max_seconds, args.utterances, Path(tmp), args.split)
    sr = recipe.data.sr
    n_test = len(mixtures) // len(args.snrs)
    talkers = len({u.talker for u in splits[args.split][:n_test]})  # of the utterances scored, not of the split
    print(f"model {model_dir}; {n_test} {args.split} utterances of {talkers} "
          f"held-out talkers × {len(args.snrs)} SNRs{', no clean-input guard' if args.no_clean_guard else ''}"
          f"{'' if args.atten_lim_db is None else f', attenuation limit {args.atten_lim_db:g} dB'}; "
          f"load {load_before:.1f} at the start")  # fmt: skip

    rows: dict[float, dict[str, list[float]]] = {}
    for snr, mix, ref in mixtures:
        enhanced = enhance_signal(model, mix, clean_guard=not args.no_clean_guard, atten_lim_db=args.atten_lim_db)
        row = rows.setdefault(snr, {f"{k}_{w}": [] for k in METRICS for w in ("noisy", "enhanced")})
        for which, y in (("noisy", mix), ("enhanced", enhanced)):
            scores = speech_scores(ref, y, sr, narrowband=False).as_dict()
            for k in METRICS:
                row[f"{k}_{which}"].append(scores[k])
    table = same_file_means(rows)
    left_out = {snr: len(next(iter(rows[snr].values()))) - int(t["n"]) for snr, t in table.items()}
    if any(left_out.values()):
        print("left out of the means (a NaN score, noisy or enhanced): "
              + ", ".join(f"{n} at {snr:g} dB" for snr, n in left_out.items() if n))  # fmt: skip

    speed = per_minute = cpu_per_minute = None
    if args.speed_minutes > 0:
        speech = np.concatenate([mix for _, mix, _ in mixtures])
        # --speed-minutes of audio whatever the number of test utterances: the mixtures repeated as often as needed
        samples = int(args.speed_minutes * 60 * sr)
        speech = np.tile(speech, int(np.ceil(samples / len(speech))))[:samples]
        enhance_signal(model, speech[: sr * 5])  # warm-up: first calls build filters and plans
        started, cpu_started = time.perf_counter(), time.process_time()
        enhance_signal(model, speech)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        minutes = len(speech) / sr / 60
        speed, per_minute, cpu_per_minute = minutes * 60 / elapsed, elapsed / minutes, cpu / minutes
    load_after = os.getloadavg()[0]

    print("\n| SNR (dB) | STOI noisy → enhanced | ESTOI | PESQ-wb | SI-SDR (dB) |")
    print("|---|---|---|---|---|")
    for snr in args.snrs:
        t = table[snr]
        cells = [f"{t[f'{k}_noisy']:.3f} → {t[f'{k}_enhanced']:.3f}" if k in ("stoi", "estoi") else
                 f"{t[f'{k}_noisy']:.2f} → {t[f'{k}_enhanced']:.2f}" for k in METRICS]  # fmt: skip
        print(f"| {snr:g} | " + " | ".join(cells) + " |")
    if speed is not None:
        print(f"\nenhance: {per_minute:.2f} s per minute of audio on {args.threads} threads = {speed:.1f}× real time "
              f"({args.speed_minutes:g} min; load {load_before:.1f} before, {load_after:.1f} after); CPU time "
              f"{cpu_per_minute:.2f} s per minute of audio, {60 / cpu_per_minute:.1f}× real time per core")  # fmt: skip

    goals = []
    if 0.0 in table:
        t = table[0.0]
        goals.append(("0 dB: STOI gain ≥ +0.05", t["stoi_enhanced"] - t["stoi_noisy"], 0.05, "{:+.3f}"))
        goals.append(("0 dB: PESQ-wb gain ≥ +0.3", t["pesq_enhanced"] - t["pesq_noisy"], 0.3, "{:+.3f}"))
    if 20.0 in table:
        t = table[20.0]
        goals.append(("20 dB: STOI change ≥ 0", t["stoi_enhanced"] - t["stoi_noisy"], 0.0, "{:+.3f}"))
        goals.append(("20 dB: PESQ-wb change ≥ 0", t["pesq_enhanced"] - t["pesq_noisy"], 0.0, "{:+.3f}"))
        goals.append(("20 dB: SI-SDR change ≥ −1 dB", t["si_sdr_enhanced"] - t["si_sdr_noisy"], -1.0, "{:+.2f}"))
    if speed is not None:
        goals.append(("speed ≥ 50× real time", speed, 50.0, "{:.1f}×"))
    print()
    for name, value, goal, fmt in goals:
        print(f"{name}: {fmt.format(value)} → {'met' if value >= goal else 'NOT met'}")
    if args.json:
        result = {
            "model": str(model_dir),
            "split": args.split,
            "clean_guard": not args.no_clean_guard,
            "atten_lim_db": args.atten_lim_db,
            "test_utterances": n_test,
            "table": table,
            "threads": args.threads,
            "seconds_per_minute": per_minute,
            "times_real_time": speed,
            "cpu_seconds_per_minute": cpu_per_minute,
            "load": [load_before, load_after],
        }
        write_json(args.json, result)


def same_file_means(rows: dict[float, dict[str, list[float]]]) -> dict[float, dict[str, float]]:
    """Per SNR, the mean of every column over the same mixtures, those whose every score is a number, with their
    count ``n`` (each column was averaged over its own finite scores, so noisy and enhanced means could be over
    different mixtures)."""
    table = {}
    for snr, row in rows.items():
        columns = np.array(list(row.values()), dtype=float)  # (columns, mixtures)
        kept = np.all(np.isfinite(columns), axis=0)
        means = columns[:, kept].mean(axis=1) if kept.any() else np.full(len(row), np.nan)
        table[snr] = {k: float(m) for k, m in zip(row, means, strict=True)} | {"n": int(kept.sum())}
    return table


if __name__ == "__main__":
    from _common import run_main

    run_main(main)
