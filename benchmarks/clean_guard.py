"""Choose the clean-input guard on the VALIDATION talkers of recipes/general (never the test split).

The guard (speechkern/postfilter.py) passes a recording unchanged when it is estimated clean: the output is
w·input + (1 − w)·enhanced, w rising linearly from 0 to 1 between a low and a high threshold of the recording's
calibrated SNR, c0 + c1·(the mask's SNR estimate) + c2·(the noise floor's); with --wada, w may also be the
smaller of that and a ramp of the waveform's WADA-SNR (both estimates must call the recording clean; chosen on
the shipped model v3's validation talkers it did worse on its test talkers, benchmarks/RESULTS.md). For each
validation utterance (cut to --max-seconds) at each SNR of --snrs and clean, the output is scored (STOI, SI-SDR)
at w = 0, 0.2, …, 1. The calibration is the least-squares fit of the true SNR on the two estimates over the
noisy mixtures; every (low, high) of a grid (with --wada, also with every WADA-SNR ramp of a grid) is then scored
by interpolating in w. The rule: no STOI or SI-SDR lost against the unguarded model at −5/0/5 dB; of those, the
ones that meet the goals at 20 dB (STOI ≥ the input's, SI-SDR within 1 dB of it, less --margin-db) with the
highest STOI at 10 dB, else the highest SI-SDR at 20 dB; then the widest ramp. ``--save`` writes the chosen guard
into the model's folder (``clean_guard`` of its config), which ``enhance`` then uses.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/clean_guard.py [--model DIR [--save]]
        [--json FILE | --from-json FILE] [--wada] [--margin-db DB]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from _common import DEV, ROOT, require_dev_data
from shipped_model import check_mixture_options, check_output, check_rate, load_model_or_exit, test_mixtures, write_json

WEIGHTS = np.linspace(0.0, 1.0, 6)
CLEAN = float("inf")


def score_weights(model, mixtures, sr: int) -> list[dict]:
    """Per mixture: SNR, the model's SNR estimate and the STOI / SI-SDR of the input and of the output at each w."""
    from speechkern import features, postfilter
    from speechkern.enhance import apply_mask
    from speechkern.metrics import si_sdr, stoi

    fc, tc = model.feature_config, model.target_config
    rows = []
    for snr, mix, ref in mixtures:
        feats = features.extract(mix, fc)
        mask = model.mask(feats)
        snr_mask, snr_floor = postfilter.model_snr_estimates(mask, feats, mix, fc, tc)  # as enhance's guard
        enhanced = apply_mask(mix, mask, model)
        outs = [postfilter.blend(mix, enhanced, w) for w in WEIGHTS]
        rows.append({
            "snr": snr,
            "snr_mask": snr_mask,
            "snr_floor": snr_floor,
            "snr_wada": postfilter.wada_snr_db(mix),
            "stoi_in": stoi(ref, mix, sr),
            "si_sdr_in": si_sdr(mix, ref) if np.isfinite(snr) else None,
            "stoi": [stoi(ref, y, sr) for y in outs],
            "si_sdr": [si_sdr(y, ref) for y in outs],
        })  # fmt: skip
    return rows


def calibrate(rows: list[dict]) -> tuple[float, float, float]:
    """Least-squares fit of the true SNR of the noisy mixtures on their two estimates (postfilter's clipping)."""
    from speechkern.postfilter import calibrated_snr_db

    noisy = [r for r in rows if np.isfinite(r["snr"])]
    basis = np.array([[calibrated_snr_db(r["snr_mask"], r["snr_floor"], c) for c in np.eye(3)] for r in noisy])
    coef, *_ = np.linalg.lstsq(basis, np.array([r["snr"] for r in noisy]), rcond=None)
    return tuple(float(c) for c in coef)


def evaluate(rows: list[dict], calibration, thresholds, wada=None) -> dict[float, dict[str, float]]:
    """Mean STOI, SI-SDR (output and input) and w per SNR with the guard at ``thresholds`` (and the WADA-SNR ramp
    ``wada``, or None), interpolated in w."""
    from speechkern.postfilter import guard_weight

    out: dict[float, dict[str, list[float]]] = {}
    for r in rows:
        w = guard_weight(r["snr_mask"], r["snr_floor"], thresholds, calibration, r.get("snr_wada"), wada)
        d = out.setdefault(r["snr"], {"stoi": [], "si_sdr": [], "stoi_in": [], "si_sdr_in": [], "w": []})
        d["stoi"].append(float(np.interp(w, WEIGHTS, r["stoi"])))
        d["si_sdr"].append(float(np.interp(w, WEIGHTS, r["si_sdr"])))
        d["stoi_in"].append(r["stoi_in"])
        d["si_sdr_in"].append(np.nan if r["si_sdr_in"] is None else r["si_sdr_in"])
        d["w"].append(w)
    with warnings.catch_warnings():  # clean input has no input SI-SDR (the input is the reference)
        warnings.simplefilter("ignore", RuntimeWarning)
        return {snr: {k: float(np.nanmean(v)) for k, v in d.items()} for snr, d in out.items()}


def _preference(t: dict, margin_db: float = 0.0) -> tuple:
    """How a guard's table ranks: first whether it meets the goals at 20 dB (STOI at least the input's, SI-SDR
    within 1 dB of it, less ``margin_db``), then, if so, its STOI at 10 dB (where passing the input forgoes the
    model's gain), then its SI-SDR at 20 dB."""
    high, mid = t.get(20.0), t.get(10.0)
    meets = (bool(high) and high["stoi"] >= high["stoi_in"]
             and high["si_sdr"] >= high["si_sdr_in"] - 1.0 + margin_db)  # fmt: skip
    return meets, round(mid["stoi"], 3) if meets and mid else 0.0, round(high["si_sdr"], 2) if high else 0.0


def search(rows: list[dict], calibration, margin_db: float = 0.0, wada: bool = False):
    """The guard that meets the rule (module docstring): ``(key, thresholds, wada thresholds or None, table)``
    or None, and the unguarded table. With ``wada``, WADA-SNR ramps are tried too (every row needs its estimate)."""
    base = evaluate(rows, calibration, (1e9, 2e9))  # w = 0 everywhere: the unguarded model
    wadas = [None]
    if wada:
        wadas += [(float(low), float(low + width)) for low in np.arange(6.0, 30.0, 1.0) for width in (2.0, 4.0, 8.0)]
    best = None
    for ramp_wada in wadas:
        for low in np.arange(5.0, 25.0, 0.5):
            for width in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0):
                t = evaluate(rows, calibration, (low, low + width), ramp_wada)
                ok = all(t[s]["stoi"] >= base[s]["stoi"] and t[s]["si_sdr"] >= base[s]["si_sdr"]
                         for s in (-5.0, 0.0, 5.0) if s in t)  # fmt: skip
                key = (*_preference(t, margin_db), width)
                if ok and (best is None or key > best[0]):
                    best = (key, (float(low), float(low + width)), ramp_wada, t)
    return base, best


def read_rows(path: Path) -> list[dict]:
    """The per-mixture scores of an earlier ``--json``; a missing or foreign file stops in one line."""
    try:
        rows = json.loads(path.read_text())["rows"]
        if not isinstance(rows, list):
            raise TypeError("its rows are no list")
        for i, r in enumerate(rows):
            check_row(r, i)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"--from-json {path}: not the scores of an earlier --json ({type(err).__name__}: {err}); "
                         "give a file that clean_guard.py --json wrote") from None  # fmt: skip
    if not any(np.isfinite(r["snr"]) for r in rows):
        raise SystemExit(f"--from-json {path}: none of its {len(rows)} rows is a noisy mixture, and the calibration "
                         "is fitted on those; give the scores of a run with --snrs")  # fmt: skip
    return rows


def check_row(r, i: int) -> None:
    """Refuse (ValueError, TypeError) a row of :func:`score_weights` that lacks a score, holds one that is no
    number, or scores another number of weights than :data:`WEIGHTS`; ``snr`` becomes a float (inf: clean)."""
    keys = ("snr", "snr_mask", "snr_floor", "stoi_in", "si_sdr_in", "stoi", "si_sdr")
    if not isinstance(r, dict):
        raise TypeError(f"row {i} is no table")
    missing = [k for k in keys if k not in r]
    if missing:
        raise KeyError(f"row {i} lacks {', '.join(missing)}")
    r["snr"] = float(r["snr"])
    if np.isnan(r["snr"]):
        raise ValueError(f"row {i}: snr is NaN")
    for key in [*keys[1:], *(["snr_wada"] if "snr_wada" in r else [])]:  # the WADA-SNR estimate: newer scores
        values = r[key] if key in ("stoi", "si_sdr") else [r[key]]
        if key in ("stoi", "si_sdr") and (not isinstance(values, list) or len(values) != len(WEIGHTS)):
            raise ValueError(f"row {i}: {key} holds no {len(WEIGHTS)} scores, one per weight")
        for v in values:
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) or (key == "si_sdr_in" and v is None)):
                raise TypeError(f"row {i}: {key} = {json.dumps(v)} is no number")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or run directory [default: the shipped model]")
    parser.add_argument("--snrs", type=float, nargs="+", default=[-5.0, 0.0, 5.0, 10.0, 20.0])
    parser.add_argument("--utterances", type=int, default=0, help="validation utterances (0: all)")
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the per-mixture scores here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--from-json", type=Path, default=None, help="search the scores of an earlier --json")
    parser.add_argument("--save", action="store_true", help="write the chosen guard into --model's folder")
    parser.add_argument("--margin-db", type=float, default=0.0, help="SI-SDR margin by which the 20-dB goal is to "
                        "be met on validation [%(default)s]")  # fmt: skip
    parser.add_argument("--wada", action="store_true", help="also try a ramp of WADA-SNR (w: the smaller of two)")
    args = parser.parse_args(argv)
    if args.save and args.model is None:
        raise SystemExit("--save needs --model DIR, the model folder to write the guard into (the shipped model is "
                         "part of the package and is not rewritten)")  # fmt: skip
    if args.save and args.from_json:
        raise SystemExit(f"--save with --from-json {args.from_json}: those scores need not be --model's; score "
                         "the model itself (drop --from-json)")  # fmt: skip
    if not (np.isfinite(args.margin_db) and args.margin_db >= 0):
        raise SystemExit(f"--margin-db {args.margin_db}: expected a margin in dB ≥ 0, such as 0.5")
    check_output("--json", args.json, args.overwrite)
    from speechkern.errors import SpeechkernError

    try:
        run(args)
    except SpeechkernError as err:
        raise SystemExit(str(err)) from None
    return 0


def run(args: argparse.Namespace) -> None:
    """Score (or read the scores), fit the calibration, search the thresholds, print; with --save, write."""
    load_before = os.getloadavg()[0]
    if args.from_json:
        rows = read_rows(args.from_json)
        model_dir = "(scores from " + str(args.from_json) + ")"
    else:
        check_mixture_options(args.snrs, args.max_seconds, args.utterances)
        model_dir, model = load_model_or_exit(args.model)
        loaded = (model_dir / "config.json").read_bytes()  # --save checks that the folder is still this model
        require_dev_data()
        import torch

        from speechkern.recipe import load_recipe

        torch.set_num_threads(1)
        recipe = load_recipe(ROOT / "recipes" / "general", [f"data.manifest={DEV / 'manifest.csv'}"])
        check_rate(model_dir, model, recipe.data.sr)
        with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
            mixtures, _ = test_mixtures(recipe, args.snrs, args.max_seconds, args.utterances, Path(tmp), split="val")
        # each validation utterance once more, as its own clean input
        mixtures += [(CLEAN, ref, ref) for snr, _, ref in mixtures if snr == args.snrs[0]]
        rows = score_weights(model, mixtures, recipe.data.sr)
        if args.json:
            write_json(args.json, {"rows": rows})
    snrs = sorted({r["snr"] for r in rows})
    print(f"model {model_dir}; {sum(r['snr'] == CLEAN for r in rows)} validation utterances × {len(snrs) - 1} SNRs "
          f"+ clean; load {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")  # fmt: skip

    print("\n| SNR (dB) | mask's SNR estimate: mean [min, max] | noise floor's |\n|---|---|---|")
    for snr in snrs:
        cells = []
        for k in ("snr_mask", "snr_floor"):
            est = [r[k] for r in rows if r["snr"] == snr]
            cells.append(f"{np.mean(est):.1f} [{np.min(est):.1f}, {np.max(est):.1f}]")
        print(f"| {_label(snr)} | " + " | ".join(cells) + " |")

    calibration = calibrate(rows)
    print(f"\ncalibration (c0, c1, c2): ({calibration[0]:.3f}, {calibration[1]:.3f}, {calibration[2]:.3f})")
    if args.wada and not all("snr_wada" in r for r in rows):
        raise SystemExit(f"--wada: the scores of {args.from_json} have no WADA-SNR estimates (written before they "
                         "were added); score the model again without --from-json")  # fmt: skip
    base, best = search(rows, calibration, args.margin_db, args.wada)
    chosen = best[3] if best else base
    print("\n| SNR (dB) | input STOI / SI-SDR | unguarded | guarded (mean w) |\n|---|---|---|---|")
    for snr in snrs:
        print(table_row(snr, base[snr], chosen[snr]))
    if CLEAN in snrs:
        print(CLEAN_NOTE)
    wada = f"; of WADA-SNR: {best[2]} dB" if best and best[2] else ""
    print(f"\nchosen (low, high) of the calibrated SNR: {best[1]} dB{wada}" if best else
          "\nno thresholds meet the rule")  # fmt: skip
    if args.save and not best:
        raise SystemExit(f"--save: no thresholds meet the rule, so {model_dir} is left as it was; score more "
                         "utterances or SNRs (-5 0 5 10 20)")  # fmt: skip
    if args.save:
        save_guard(model, model_dir, calibration, best[1], loaded, best[2])
        print(f"saved into {model_dir}/config.json: {model.clean_guard}")


CLEAN_NOTE = (
    "clean: the reference is the input itself, so the input's SI-SDR is infinite (∞) and the guarded output's, "
    "part input, is n/a (SI-SDR interpolated in w towards w = 1 means nothing); its STOI and w are as above"
)


def _label(snr: float) -> str:
    return "clean" if snr == CLEAN else f"{snr:g}"


def table_row(snr: float, base: dict[str, float], chosen: dict[str, float]) -> str:
    """One row of the guard table (:func:`evaluate`'s means at ``snr``, unguarded and guarded). On the clean row
    (``snr`` = :data:`CLEAN`) the input is the reference: its SI-SDR is ∞, and the guarded one is n/a where the
    guard passes any of the input (w > 0), since an SI-SDR interpolated towards w = 1 (the input itself, ~200 dB)
    has no meaning (:data:`CLEAN_NOTE`)."""
    clean = snr == CLEAN
    si_in = "∞" if clean else f"{base['si_sdr_in']:.2f}"
    si_guarded = "n/a" if clean and chosen["w"] > 0 else f"{chosen['si_sdr']:.2f}"
    return (f"| {_label(snr)} | {base['stoi_in']:.3f} / {si_in} | {base['stoi']:.3f} / "
            f"{base['si_sdr']:.2f} | {chosen['stoi']:.3f} / {si_guarded} ({chosen['w']:.2f}) |")  # fmt: skip


def save_guard(model, model_dir: Path, calibration, thresholds, loaded: bytes, wada=None) -> None:
    """Write the guard into the model folder it was fitted for (atomically, :func:`save_model`); ``loaded``: that
    folder's config.json as read before scoring. A folder changed meanwhile, a guard that is no guard and a
    folder that cannot be written stop in one line, and the folder is left as it was."""
    from speechkern.models.io import save_model
    from speechkern.postfilter import GuardConfig

    config = model_dir / "config.json"
    if not config.is_file() or config.read_bytes() != loaded:
        raise SystemExit(f"--save: {model_dir} changed while its guard was fitted, so it is left as it was; run "
                         "clean_guard.py again")  # fmt: skip
    try:
        guard = GuardConfig(calibration=calibration, thresholds=thresholds, wada_thresholds=wada)
    except ValueError as err:  # a fit on too few mixtures
        reason = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)
        raise SystemExit(f"--save: the fitted guard {calibration}, {thresholds} is not one ({reason}); "
                         f"{model_dir} is left as it was; score more utterances or SNRs") from None  # fmt: skip
    model.clean_guard = guard
    try:
        save_model(model, model_dir, overwrite=True)
    except OSError as err:
        raise SystemExit(f"--save: {model_dir} cannot be written ({err}); it is left as it was") from None


if __name__ == "__main__":
    raise SystemExit(main())
