"""The paper's Tables 6.1–6.4 and Fig. 6.2 on open data: kernel machines against the DNN, one model per condition.

Hui, Ma & Belkin (Interspeech 2019) trained one model per noise and SNR. This script does the same on
../shared/data/dev through ``recipes/paper``: for each condition it runs ``speechkern train`` once per model (the
4-subband kernel machine, the 1-subband one and the DNN, each in its own process, every model on the same frames),
scores the test split (held-out talkers, second halves of the noises) and keeps the condition's row in
``OUT/results.jsonl``, so an interrupted run continues where it stopped. Then it prints, in the paper's layout and
with the paper's numbers in parentheses: Table 6.1 (IRM: MSE ×10⁻², STOI, PESQ of kernel, DNN and noisy), 6.2 (IBM:
accuracy and STOI), 6.3 (1 against 4 subbands), 6.4 (minutes and epochs per model), the counts of conditions where
the 4-subband kernel wins, ties or loses per metric (ties: equal at the paper's printed precision), and writes
Fig. 6.2 (per-channel MSE of one condition) as ``OUT/fig6_2.png``.

    .venv/bin/python benchmarks/paper_tables.py [--quick] [--noises ssn,babble,factory,engine,oproom]
        [--snrs -5,0,5] [--frames 10000] [--utterances 150] [--tasks irm,ibm] [--models kernel,kernel1,dnn] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, require_dev_data

RECIPE = ROOT / "recipes" / "paper"
NOISES = ("engine", "babble", "ssn", "oproom", "factory")  # the paper's row order
PAPER_NOISE = {"engine": "engine", "babble": "babble", "ssn": "SSN", "oproom": "oproom", "factory": "factory1"}
IBM_CONDITIONS = (("babble", 0.0), ("babble", -2.0), ("babble", -5.0), ("ssn", -2.0), ("ssn", -5.0), ("ssn", -8.0))
MODELS = ("kernel", "kernel1", "dnn")
LABEL = {"kernel": "kernel (4 subbands)", "kernel1": "kernel (1 subband)", "dnn": "DNN", "noisy": "noisy"}
# --quick: two IRM conditions and one IBM one, 3000 frames from 40 utterances, a smaller kernel search (γ ≤ 1, which
# the paper finds best on speech, on 1500/1000 frames)
QUICK = {"noises": "ssn,factory", "snrs": "0", "frames": 3000, "utterances": 40, "n_val": 6, "n_test": 6,
         "ibm": "ssn@-5", "extra": ["kernel.gammas=[0.5,1.0]", "kernel.autotune_train_frames=1500",
                                    "kernel.autotune_val_frames=1000"]}  # fmt: skip

# The paper's numbers (SPEC.md §8): Table 6.1, TIMIT IRM: MSE ×10⁻² K, D; STOI K, D, noisy; PESQ K, D, noisy.
PAPER_IRM = {
    ("engine", 5): (1.10, 1.41, 0.91, 0.90, 0.80, 2.77, 2.77, 1.97),
    ("engine", 0): (1.34, 1.86, 0.86, 0.85, 0.68, 2.51, 2.45, 1.66),
    ("engine", -5): (1.17, 1.82, 0.80, 0.77, 0.57, 2.19, 2.16, 1.41),
    ("babble", 5): (3.34, 3.49, 0.86, 0.86, 0.77, 2.54, 2.52, 2.08),
    ("babble", 0): (4.18, 4.37, 0.77, 0.77, 0.66, 2.12, 2.10, 1.73),
    ("babble", -5): (4.94, 5.43, 0.64, 0.64, 0.55, 1.70, 1.61, 1.42),
    ("ssn", 5): (1.35, 1.53, 0.88, 0.88, 0.81, 2.68, 2.66, 2.05),
    ("ssn", 0): (1.48, 1.67, 0.82, 0.82, 0.69, 2.36, 2.32, 1.75),
    ("ssn", -5): (1.60, 1.76, 0.74, 0.74, 0.57, 2.03, 2.00, 1.48),
    ("oproom", 5): (1.44, 1.85, 0.88, 0.88, 0.79, 2.80, 2.79, 2.16),
    ("oproom", 0): (1.34, 1.86, 0.84, 0.83, 0.70, 2.50, 2.47, 1.78),
    ("oproom", -5): (1.17, 1.82, 0.79, 0.76, 0.59, 2.23, 2.12, 1.40),
    ("factory", 5): (2.51, 2.53, 0.86, 0.86, 0.77, 2.56, 2.51, 1.99),
    ("factory", 0): (2.52, 2.55, 0.78, 0.79, 0.65, 2.20, 2.23, 1.62),
    ("factory", -5): (2.71, 2.77, 0.68, 0.68, 0.54, 1.79, 1.77, 1.29),
}
# Table 6.2, HINT IBM: accuracy DNN, kernel; STOI DNN, kernel.
PAPER_IBM = {
    ("babble", 0): (0.90, 0.92, 0.83, 0.86), ("babble", -2): (0.91, 0.92, 0.80, 0.83),
    ("babble", -5): (0.90, 0.91, 0.76, 0.78), ("ssn", -2): (0.91, 0.92, 0.79, 0.81),
    ("ssn", -5): (0.91, 0.90, 0.76, 0.75), ("ssn", -8): (0.92, 0.89, 0.74, 0.71),
}  # fmt: skip
# Table 6.3: MSE ×10⁻², STOI, PESQ of the 1-subband and the 4-subband kernel.
PAPER_SUBBANDS = {("ssn", 0): ((1.60, 0.81, 2.35), (1.48, 0.82, 2.36)), ("ssn", -5): ((1.67, 0.73, 2.01),
                  (1.60, 0.74, 2.03)), ("factory", -5): ((2.76, 0.67, 1.78), (2.71, 0.68, 1.79))}  # fmt: skip
# Table 6.4: minutes on one Titan Xp GPU and epochs (kernel epochs are the same for 1 and 4 subbands).
PAPER_TIME = {"irm": {"kernel1": (18, 5), "kernel": (65, 5), "dnn": (124, 93)},
              "ibm": {"kernel1": (0.8, 10), "kernel": (3.2, 10), "dnn": (6.6, 50)}}  # fmt: skip
# Higher is better except for MSE; a tie is equal at the paper's printed precision.
METRICS = {"mse": (-1, 2, 100.0), "stoi": (1, 2, 1.0), "pesq": (1, 2, 1.0), "accuracy": (1, 2, 1.0)}


def stand_in_noises(recipe_dir: Path = RECIPE) -> dict[str, str]:
    """Paper noise name → the recipe's ``data.noises`` entry standing in for it (generated ones by name)."""
    from speechkern.recipe import load_recipe

    files = [n for n in load_recipe(recipe_dir).data.noises if n not in ("ssn", "babble")]
    out = {"ssn": "ssn", "babble": "babble"}
    for paper, word in (("factory", "machine"), ("engine", "boat"), ("oproom", "ventilation")):
        out[paper] = next(f for f in files if word in Path(f).name)
    return out


def noise_name(entry: str) -> str:
    """The name the pipeline gives a ``data.noises`` entry (an audio file: its stem)."""
    return entry if entry in ("ssn", "babble") else Path(entry).stem


def _names(text: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    """The comma-separated names of ``option``, each one of ``allowed`` (SystemExit otherwise)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        what = f"unknown {', '.join(unknown)}" if unknown else f"no {option.strip('-').rstrip('s')} given"
        raise SystemExit(f"{option}: {what}; expected some of {', '.join(allowed)}, separated by commas")
    return names


def _snr(text: str) -> float | None:
    """An SNR in dB from an option's text; None when it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value + 0.0 if np.isfinite(value) else None  # -0 → 0: one condition, one folder


def _snrs(text: str) -> list[float]:
    """--snrs as distinct SNRs in dB, in the order given (SystemExit on one that is no number)."""
    snrs = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        if (snr := _snr(item)) is None:
            raise SystemExit(f"--snrs: {item!r} is not a finite number of dB; give numbers separated by commas, "
                             "such as -5,0,5")  # fmt: skip
        snrs.append(snr)
    return list(dict.fromkeys(snrs))


def units_of(args) -> list[dict]:
    """The conditions to measure: task, paper noise name, SNR and the recipe overrides of the condition's run.

    Raises SystemExit, before any work, on an argument that names no noise, task, model or number, and on recipe
    values (from --frames, --utterances, --extra, ...) that ``speechkern train`` would refuse."""
    from speechkern.errors import SpeechkernError
    from speechkern.recipe import load_recipe

    noises = _names(args.noises, "--noises", NOISES)
    tasks = _names(args.tasks, "--tasks", ("irm", "ibm"))
    _names(args.models, "--models", MODELS)
    snrs = _snrs(args.snrs)
    if "irm" in tasks and not snrs:
        raise SystemExit("--snrs: no SNR given; give numbers of dB separated by commas, such as -5,0,5")
    if args.frames < 1:
        raise SystemExit(f"--frames {args.frames}: expected at least 1 training frame per condition")
    stand_in = stand_in_noises()
    # the recipe's text is part of each row's key: rows measured with another recipe are not reused
    recipe = "recipe-" + hashlib.sha1((RECIPE / "recipe.toml").read_bytes()).hexdigest()[:8]
    units = []
    if "irm" in tasks:
        units += [{"task": "irm", "noise": n, "snr": s} for n in NOISES if n in noises for s in snrs]
    if "ibm" in tasks:
        ibm = list(IBM_CONDITIONS)
        if args.ibm:
            ibm = []
            for item in (c.strip() for c in args.ibm.split(",") if c.strip()):
                noise, _, snr = item.rpartition("@")
                if not noise or _snr(snr) is None:
                    raise SystemExit(f"--ibm: {item!r} is not NOISE@SNR; give conditions such as ssn@-5,babble@0")
                if noise not in NOISES:
                    raise SystemExit(f"--ibm: unknown noise {noise} in {item!r}; expected one of {', '.join(NOISES)}")
                ibm.append((noise, _snr(snr)))
        units += [{"task": "ibm", "noise": n, "snr": s} for n, s in dict.fromkeys(ibm)]
    for u in units:
        u["condition"] = f"{u['noise']}_{u['snr']:g}dB"
    irm_conditions = [u["condition"] for u in units if u["task"] == "irm"]
    shown = getattr(args, "figure_condition", None)
    if shown is not None and shown not in irm_conditions:  # it fell back to another condition after hours of work
        have = f"expected one of {', '.join(irm_conditions)}" if irm_conditions else "--tasks has no irm, so no figure"
        raise SystemExit(f"--figure-condition {shown}: not an IRM condition of this run; {have}")
    for u in units:
        u["sets"] = [
            f"data.noises={json.dumps([stand_in[u['noise']]])}",
            f"data.snrs=[{u['snr']}]",
            f"train.max_train_frames={args.frames}",
            f"data.n_train={args.utterances}",
            f"data.n_val={args.n_val}",
            f"data.n_test={args.n_test}",
            *args.extra,
        ]
        if u["task"] == "ibm":
            u["sets"].append("target.kind=ibm")
        u["key"] = "/".join([u["task"], u["condition"], str(args.frames), str(args.utterances), *args.extra, recipe])
        try:
            load_recipe(RECIPE, u["sets"])  # what each `speechkern train` process would refuse, refused now
        except SpeechkernError as err:
            raise SystemExit(_as_option(str(err), u)) from None
    return units


# The recipe keys this script sets from its own options: a refusal names the option the user gave.
OPTION_KEYS = {"data.n_train": "--utterances", "data.n_val": "--n-val", "data.n_test": "--n-test",
               "train.max_train_frames": "--frames"}  # fmt: skip


def _as_option(message: str, unit: dict) -> str:
    """A recipe's refusal of a condition's overrides in this script's terms: ``recipe override data.n_train=-1``
    is ``--utterances -1``, an --extra override is named as such; others name the condition."""
    for key, option in OPTION_KEYS.items():
        if message.startswith(f"recipe override {key}="):
            return option + " " + message.removeprefix(f"recipe override {key}=")
    for extra in unit["sets"][6:]:
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in extra)
        for given in (f"recipe override {shown}", f"recipe override {shown!r}"):
            if message.startswith(given):
                return f"--extra {message.removeprefix('recipe override ')}"
    return f"condition {unit['task']} {unit['condition']}: {message}"


ROW_FIELDS = {"key", "task", "noise", "snr", "condition"}  # what every row has, and the tables read


def read_rows(path: Path) -> dict[str, dict]:
    """The rows kept in ``path`` (results.jsonl) by key, the last of a repeated key winning.

    A last line cut off mid-write (no newline after it, not a whole row) is dropped, so its condition is measured
    again; any other line that is not a row raises SystemExit naming it, and the file is left as it is.
    """
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    last = lines.pop()  # "" where the file ends with a newline
    rows: dict[str, dict] = {}
    for number, line in enumerate([*lines, last], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("key"), str) or not row.keys() >= ROW_FIELDS:
            if number > len(lines):
                print(f"{path}: its last line was cut off mid-write; that condition is measured again", flush=True)
                break
            raise SystemExit(f"{path}:{number}: not a row of this benchmark ({line[:60]!r}); delete the line (or the "
                             "file, to measure every condition again) and run again")  # fmt: skip
        rows[row["key"]] = row
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``path`` as JSON lines, atomically: an interrupt leaves the old file or the new one."""
    from speechkern.outputs import write_text

    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def train(run_dir: Path, model: str, sets: list[str]) -> None:
    """One ``speechkern train`` process for one model of one condition (resumed where a run stopped)."""
    argv = [sys.executable, "-m", "speechkern_cli.main", "train", str(RECIPE), "--out", str(run_dir), "--models",
            model, "--resume", "--quiet"]  # fmt: skip
    for item in sets:
        argv += ["--set", item]
    if subprocess.run(argv).returncode:
        raise SystemExit(f"speechkern train failed for {model} in {run_dir}; rerun to resume")


def measure(unit: dict, run_dir: Path, models: list[str], tick) -> dict:
    """Train the condition's models and score its test split; the row kept in results.jsonl."""
    from speechkern.evaluate import evaluate

    for model in models:
        train(run_dir, model, unit["sets"])
        tick(f"{unit['condition']} {model} trained")
    ev = evaluate(run_dir, examples=0, workers=1)
    row = {k: unit[k] for k in ("key", "task", "noise", "snr", "condition")}
    try:
        timings = {r["model"]: r for r in json.loads((run_dir / "training_time.json").read_text())["rows"]}
    except (OSError, ValueError, KeyError, TypeError):
        timings = {}
    scored = {r["system"] for r in ev.rows}
    lacking = [m for m in models if m not in timings or m not in scored]
    if lacking:  # a model kept from an earlier run whose timing row was lost, or one that no longer loads
        raise SystemExit(f"{run_dir}: no training time or scores for {', '.join(lacking)} (see its train.log and "
                         f"training_time.json); delete the folder to measure {unit['condition']} again")  # fmt: skip
    for r in ev.rows:
        if r["condition"] == "all":
            continue
        scores = {"mse": r.get("mse_pooled", r.get("mse")), "stoi": r.get("stoi"), "pesq": r.get("pesq"),
                  "accuracy": r.get("accuracy")}  # fmt: skip
        row[r["system"]] = {k: v for k, v in scores.items() if v is not None and np.isfinite(v)}
    for model in models:
        t = timings[model]
        minutes = t["minutes"] + (t.get("autotune_minutes") or 0.0) + (t.get("transform_minutes") or 0.0)
        row[model] |= {"minutes": minutes, "epochs": t["epochs"], "minutes_to_best": t.get("minutes_to_best", minutes),
                       "val_mse": t["val_mse"], "channel_mse": [float(v) for v in ev.channel_mse[model]]}  # fmt: skip
    row["test_files"] = len(ev.files)
    row["load"] = round(os.getloadavg()[0], 2)
    tick(f"{unit['condition']} evaluated")
    return row


# ---------------------------------------------------------------------------------------------------------
# Tables


def _num(value, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _cell(row: dict, system: str, metric: str, paper=None) -> str:
    scale = METRICS[metric][2]
    ours = _num(row.get(system, {}).get(metric), scale)
    return ours if paper is None else f"{ours} ({paper:.2f})"


def table_irm(rows: list[dict]) -> list[str]:
    """Table 6.1: MSE ×10⁻², STOI and PESQ per condition; the paper's value in parentheses."""
    out = ["| noise | SNR | MSE K | MSE D | STOI K | STOI D | STOI noisy | PESQ K | PESQ D | PESQ noisy |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        p = PAPER_IRM.get((r["noise"], r["snr"]), (None,) * 8)
        cells = [_cell(r, "kernel", "mse", p[0]), _cell(r, "dnn", "mse", p[1]), _cell(r, "kernel", "stoi", p[2]),
                 _cell(r, "dnn", "stoi", p[3]), _cell(r, "noisy", "stoi", p[4]), _cell(r, "kernel", "pesq", p[5]),
                 _cell(r, "dnn", "pesq", p[6]), _cell(r, "noisy", "pesq", p[7])]  # fmt: skip
        out.append(f"| {PAPER_NOISE[r['noise']]} | {r['snr']:g} | " + " | ".join(cells) + " |")
    return out


def table_ibm(rows: list[dict]) -> list[str]:
    """Table 6.2: IBM accuracy and STOI, DNN then kernel; the paper's value in parentheses."""
    out = ["| noise | SNR | accuracy D | accuracy K | STOI D | STOI K | STOI noisy |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = PAPER_IBM.get((r["noise"], r["snr"]), (None,) * 4)
        cells = [
            _cell(r, "dnn", "accuracy", p[0]),
            _cell(r, "kernel", "accuracy", p[1]),
            _cell(r, "dnn", "stoi", p[2]),
            _cell(r, "kernel", "stoi", p[3]),
            _cell(r, "noisy", "stoi"),
        ]
        out.append(f"| {PAPER_NOISE[r['noise']]} | {r['snr']:g} | " + " | ".join(cells) + " |")
    return out


def table_subbands(rows: list[dict]) -> list[str]:
    """Table 6.3: the 1-subband against the 4-subband kernel (and the DNN), MSE ×10⁻² / STOI / PESQ."""
    out = [
        "| noise | SNR | 1 subband | 4 subbands | DNN | paper 1 subband | paper 4 subbands |",
        "|---|---|---|---|---|---|---|",
    ]

    def triple(r, system):
        return " / ".join(_cell(r, system, m) for m in ("mse", "stoi", "pesq"))

    for r in rows:
        p = PAPER_SUBBANDS.get((r["noise"], r["snr"]))
        paper = [" / ".join(f"{v:.2f}" for v in t) for t in p] if p else ["–", "–"]
        out.append(f"| {PAPER_NOISE[r['noise']]} | {r['snr']:g} | {triple(r, 'kernel1')} | {triple(r, 'kernel')} | "
                   f"{triple(r, 'dnn')} | {paper[0]} | {paper[1]} |")  # fmt: skip
    return out


def table_time(rows: list[dict]) -> list[str]:
    """Table 6.4: training minutes per model (autotune included; the DNN's to its best epoch) and epochs."""
    out = ["| task | model | conditions | mean minutes | DNN min to best | mean epochs | paper min | paper epochs |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for task in ("irm", "ibm"):
        for model in MODELS:
            got = [r[model] for r in rows if r["task"] == task and "minutes" in r.get(model, {})]
            if not got:
                continue
            paper = PAPER_TIME[task][model]
            to_best = f"{np.mean([g['minutes_to_best'] for g in got]):.2f}" if model == "dnn" else "–"
            minutes, epochs = np.mean([g["minutes"] for g in got]), np.mean([g["epochs"] for g in got])
            out.append(f"| {task.upper()} | {LABEL[model]} | {len(got)} | {minutes:.2f} | {to_best} | {epochs:.1f} | "
                       f"{paper[0]} | {paper[1]} |")  # fmt: skip
    return out


def compare(a: float, b: float, metric: str) -> int:
    """+1 where ``a`` (kernel) is better than ``b`` (DNN) at the paper's precision, 0 a tie, −1 worse."""
    sign, digits, scale = METRICS[metric]
    ra, rb = round(a * scale, digits), round(b * scale, digits)
    return 0 if ra == rb else sign * (1 if ra > rb else -1)


def counts(rows: list[dict], model: str = "kernel") -> dict[tuple[str, str], dict[str, int]]:
    """(task, metric) → wins, ties and losses of ``model`` against the DNN over the conditions that have both."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        metrics = ("mse", "stoi", "pesq") if r["task"] == "irm" else ("accuracy", "stoi")
        for m in metrics:
            a, b = r.get(model, {}).get(m), r.get("dnn", {}).get(m)
            if a is None or b is None:
                continue
            c = out.setdefault((r["task"], m), {"wins": 0, "ties": 0, "losses": 0})
            c[("losses", "ties", "wins")[compare(a, b, m) + 1]] += 1
    return out


def table_counts(rows: list[dict]) -> list[str]:
    out = ["| task | model | metric | wins | ties | losses | conditions |", "|---|---|---|---|---|---|---|"]
    for model in ("kernel", "kernel1"):
        for (task, metric), c in counts(rows, model).items():
            out.append(f"| {task.upper()} | {LABEL[model]} | {metric} | {c['wins']} | {c['ties']} | {c['losses']} | "
                       f"{sum(c.values())} |")  # fmt: skip
    return out


def time_ratios(rows: list[dict]) -> list[str]:
    """Per condition: kernel minutes over the DNN's minutes to its best epoch (goals: 1 subband < 1/3, 4 < 1)."""
    out = []
    for r in rows:
        dnn = r.get("dnn", {}).get("minutes_to_best")
        if not dnn:
            continue
        parts = [f"{LABEL[m]} ×{r[m]['minutes'] / dnn:.2f}" for m in ("kernel1", "kernel") if "minutes" in r.get(m, {})]
        out.append(
            f"- {r['task'].upper()} {r['condition']}: " + ", ".join(parts) + " of the DNN's time to its best epoch"
        )
    return out


def tables(rows: list[dict]) -> str:
    """Every table as Markdown, in the paper's order."""
    irm = sorted((r for r in rows if r["task"] == "irm"), key=lambda r: (NOISES.index(r["noise"]), -r["snr"]))
    ibm = [r for r in rows if r["task"] == "ibm"]
    parts = []
    if irm:
        parts += ["Table 6.1 (IRM; ours (paper), MSE ×10⁻², K = kernel with 4 subbands, D = DNN)", *table_irm(irm), ""]
    if ibm:
        parts += ["Table 6.2 (IBM, threshold 0.5; ours (paper))", *table_ibm(ibm), ""]
    if irm:
        parts += ["Table 6.3 (MSE ×10⁻² / STOI / PESQ)", *table_subbands(irm), ""]
    parts += ["Table 6.4 (training time per condition)", *table_time(rows), "", "Kernel against the DNN per metric "
              "(ties: equal at two decimals)", *table_counts(rows), "", *time_ratios(irm + ibm)]  # fmt: skip
    return "\n".join(parts)


FIGURE_CONDITION = "ssn_0dB"  # the condition of the paper's Fig. 6.2


def figure(rows: list[dict], path: Path, condition: str | None = None) -> str | None:
    """Fig. 6.2: per-channel test MSE of the 1- and 4-subband kernels and the DNN for one IRM condition
    (None: :data:`FIGURE_CONDITION`; the first IRM condition where that one is missing)."""
    irm = [r for r in rows if r["task"] == "irm" and all("channel_mse" in r.get(m, {}) for m in MODELS)]
    condition = FIGURE_CONDITION if condition is None else condition
    pick = next((r for r in irm if r["condition"] == condition), irm[0] if irm else None)
    if pick is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from speechkern.report import _save_figure  # atomic: a temporary file renamed

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for model, style in (("dnn", "k-"), ("kernel1", "b--"), ("kernel", "r-")):
        ax.plot(np.arange(1, 65), pick[model]["channel_mse"], style, label=LABEL[model])
    ax.set(xlabel="channel", ylabel="test MSE", title=f"Per-channel MSE, {pick['condition']} (Fig. 6.2)")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    return pick["condition"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a short check run (options given with it win): {QUICK}")
    parser.add_argument("--noises", default=",".join(NOISES), help="paper noise names [%(default)s]")
    parser.add_argument("--snrs", default="-5,0,5", help="SNRs of the IRM table in dB [%(default)s]")
    # defaults sized to fit about 3 hours on 2 idle cores (recipes/paper/README.md: an estimate from --quick)
    parser.add_argument("--frames", type=int, default=10000, help="training frames per condition [%(default)s]")
    parser.add_argument("--utterances", type=int, default=150, help="training utterances (0 = all) [%(default)s]")
    parser.add_argument("--extra", action="append", default=[], help="more --set KEY=VALUE for every run")
    parser.add_argument("--tasks", default="irm,ibm", help="irm (Tables 6.1, 6.3), ibm (Table 6.2) [%(default)s]")
    parser.add_argument("--ibm", default="", help="IBM conditions NOISE@SNR,... [the paper's six]")
    parser.add_argument("--models", default=",".join(MODELS), help="[%(default)s]")
    parser.add_argument("--n-val", type=int, default=15, help="validation utterances (whole talkers)")
    parser.add_argument("--n-test", type=int, default=20, help="test utterances (whole talkers)")
    parser.add_argument("--figure-condition", help=f"the IRM condition of Fig. 6.2 [{FIGURE_CONDITION} where it is "
                        "measured, else the first]")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "paper-tables", help="[%(default)s]")
    args = parser.parse_args(argv)
    if args.quick:  # the quick run's values become the defaults: options given with --quick still win
        parser.set_defaults(**{k: QUICK[k] for k in ("noises", "snrs", "frames", "utterances", "n_val", "n_test",
                                                      "ibm")})  # fmt: skip
        args = parser.parse_args(argv)
        args.extra = [*QUICK["extra"], *args.extra]
    require_dev_data()
    args.out = Path.cwd() / args.out  # before the chdir below: a relative --out is where the command runs
    os.chdir(ROOT)  # the recipe's data paths are relative to the checkout
    units = units_of(args)
    check_out(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SPEECHKERN_CACHE", str(args.out / "cache"))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results = args.out / "results.jsonl"
    done = read_rows(results)
    todo = [u for u in units if u["key"] not in done]
    total, finished, started = len(todo) * (len(models) + 1), 0, time.perf_counter()

    def tick(what: str) -> None:
        nonlocal finished
        finished += 1
        elapsed = time.perf_counter() - started
        eta = elapsed / finished * (total - finished)
        print(f"[{finished}/{total}] {what}; {elapsed / 60:.1f} min elapsed, about {eta / 60:.1f} min left "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip

    print(f"{len(units)} conditions, {len(units) - len(todo)} kept from {results}; {args.frames} training frames "
          f"each; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for unit in todo:
        tag = hashlib.sha1(unit["key"].encode()).hexdigest()[:8]  # one folder per setting, the same on resume
        run_dir = args.out / unit["task"] / f"{unit['condition']}-{tag}"
        try:
            row = measure(unit, run_dir, models, tick)
        except KeyboardInterrupt:
            kept = sum(u["key"] in done for u in units)
            raise SystemExit(f"interrupted; {kept} of {len(units)} conditions kept in {results}; run the same "
                             "command to continue (finished models are kept too)") from None  # fmt: skip
        done[unit["key"]] = row
        write_rows(results, list(done.values()))
    rows = [done[u["key"]] for u in units]
    print("\n" + tables(rows))
    shown = figure(rows, args.out / "fig6_2.png", args.figure_condition)
    if shown:
        print(f"\nFig. 6.2 ({shown}): {args.out / 'fig6_2.png'}")
    print(f"load at the end {os.getloadavg()[0]:.1f}; {(time.perf_counter() - started) / 60:.1f} min in this session")


def check_out(out: Path) -> None:
    """Refuse, before any work, an --out that is a file or lies where results.jsonl cannot be written."""
    from speechkern.errors import SpeechkernError
    from speechkern.outputs import check_writable

    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out}: is a file, not a folder; choose another --out")
    if (out / "results.jsonl").exists() and not (out / "results.jsonl").is_file():
        raise SystemExit(f"--out {out}: its results.jsonl is not a file; move it away or choose another --out")
    try:
        check_writable(out / "results.jsonl")
    except SpeechkernError as err:
        raise SystemExit(f"--out {out}: {err}") from None


if __name__ == "__main__":
    from _common import run_main

    run_main(main)
