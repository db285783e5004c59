"""Reports a researcher can publish: tables (Markdown, CSV, JSON), figures (PNG) and one HTML page.

Everything lands in ``RUN_DIR/report/``: ``results.{md,csv,json}`` (per condition and system, as the paper's
Tables 6.1–6.3), ``files.csv`` (every file's scores), ``channel_mse.png`` (the paper's Figure 6.2),
``example-*.png`` (clean, noisy and enhanced time–frequency representations in dB with the ideal and estimated
masks, frequency axes in Hz), ``audio/`` (a few examples to listen to), ``run.json`` (training times, the chosen
kernels, data sizes and whether the run is complete) and ``index.html`` tying them together.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from speechkern import audio  # noqa: E402
from speechkern.dataset import read_run_manifest  # noqa: E402
from speechkern.enhance import apply_mask  # noqa: E402
from speechkern.errors import SpeechkernError  # noqa: E402
from speechkern.evaluate import METRICS, SYSTEM_ORDER, Evaluation, run_models  # noqa: E402
from speechkern.outputs import check_writable, remove_parts, write_text  # noqa: E402
from speechkern.pipeline import format_minutes  # noqa: E402

LABELS = {
    "mse": "MSE ×10⁻² (file mean)", "mse_pooled": "MSE ×10⁻² (pooled)", "stoi": "STOI", "estoi": "ESTOI",
    "pesq": "PESQ-WB", "pesq_nb": "PESQ-NB", "si_sdr": "SI-SDR (dB)", "accuracy": "accuracy",
    "hit_fa": "HIT−FA (file mean)", "hit_fa_pooled": "HIT−FA (pooled)",
}  # fmt: skip


def _fmt(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric in ("mse", "mse_pooled"):
        text = f"{100 * value:.2f}"
    elif metric == "si_sdr":
        text = f"{value:.1f}"
    else:
        text = f"{value:.3f}" if metric in ("stoi", "estoi", "accuracy", "hit_fa", "hit_fa_pooled") else f"{value:.2f}"
    return _no_negative_zero(text)


def _no_negative_zero(text: str) -> str:
    """``-0.00`` → ``0.00``: a value that rounds to zero has no sign worth printing."""
    return text[1:] if re.fullmatch(r"-0(\.0*)?", text) else text


def results_markdown(rows: list[dict]) -> str:
    """One Markdown table: a row per (condition, system), a column per metric present."""
    present = [m for m in METRICS if any(m in r for r in rows)]
    head = "| condition | system | files | " + " | ".join(LABELS[m] for m in present) + " |"
    lines = [head, "|" + "---|" * (3 + len(present))]
    for r in rows:
        cells = [_fmt(m, r.get(m)) for m in present]
        lines.append(f"| {r['condition']} | {r['system']} | {r['n_files']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_csv(rows: list[dict]) -> str:
    fields = ["condition", "system", "n_files", "n_failed", *[m for m in METRICS if any(m in r for r in rows)]]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def results_json(ev: Evaluation) -> dict:
    """The object ``evaluate --json`` prints: ``{"rows": [...], "problems": [...]}`` (NaN written as null)."""
    return _json_safe({"rows": ev.rows, "problems": ev.problems})


def channel_frequencies(fc, tc, n_rows: int) -> np.ndarray:
    """Centre frequency in Hz of each row of a time–frequency array (mask or energies) in the target's domain.

    Cochleagram: the gammatone centre frequencies (ERB-rate spaced, ``fc.fmin`` to ``fc.fmax``). STFT: the bin
    frequencies ``k·sr/n_fft`` with ``n_fft = 2·(n_rows − 1)``.
    """
    if tc.domain == "cochleagram":
        from speechkern.gammatone import erb_space

        return erb_space(fc.fmin, fc.fmax, n_rows)
    return np.arange(n_rows) * fc.sr / max(1, 2 * (n_rows - 1))


def plot_channel_mse(ev: Evaluation, path: Path) -> None:
    """Mask MSE per frequency channel for each model (the paper's Figure 6.2), against centre frequency in Hz."""
    fc, tc = ev.recipe.features, ev.recipe.target
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for name in _table_order(ev.channel_mse):
        curve = ev.channel_mse[name]
        freqs = channel_frequencies(fc, tc, len(curve))
        ax.plot(freqs, curve, label=name, linewidth=1.5, marker=".", markersize=3)
    if tc.domain == "cochleagram":
        ax.set_xscale("log")
        _hz_ticks(ax.xaxis, *ax.get_xlim())
    ax.set_xlabel("centre frequency (Hz)" if tc.domain == "cochleagram" else "frequency (Hz)")
    ax.set_ylabel("mask MSE")
    ax.set_title(f"Mask MSE per {tc.domain} channel on the test split")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


_HZ_TICKS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000)  # about evenly spread on the ERB scale


def _hz_ticks(axis, low: float, high: float, position=None) -> None:
    """Ticks at round frequencies within [low, high] Hz; ``position`` maps Hz to axis units (default: identity)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = [f for f in _HZ_TICKS if low <= f <= high]
    axis.set_major_locator(FixedLocator([position(f) if position else f for f in ticks]))
    axis.set_minor_locator(NullLocator())
    axis.set_ticklabels([f"{f / 1000:g}k" if f >= 1000 else f"{f}" for f in ticks])


def _representation(y: np.ndarray, fc, tc) -> np.ndarray:
    """Energies (n_units, n_frames) in the target's domain, for display."""
    if tc.domain == "cochleagram":
        from speechkern import gammatone

        return gammatone.cochleagram(y, sr=fc.sr, n_channels=fc.n_channels, fmin=fc.fmin, fmax=fc.fmax,
                                     frame_length=fc.frame_length, hop_length=fc.hop_length)  # fmt: skip
    from speechkern import stft

    return stft.power_spectrogram(y, frame_length=fc.frame_length, hop_length=fc.hop_length)


def _table_order(names) -> list[str]:
    """Systems in the order of the results table (noisy, ideal, kernel, kernel1, dnn, then any other)."""
    order = {s: i for i, s in enumerate(SYSTEM_ORDER)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


_SIGNAL_TITLES = {"clean": "clean speech", "noisy": "noisy mixture", "ideal": "ideal-mask output"}
DYNAMIC_RANGE_DB = 80.0  # energies shown from the loudest unit down this far


def plot_example(title: str, signals: dict[str, np.ndarray], masks: dict[str, np.ndarray], fc, tc, path: Path):
    """Write :func:`example_figure` as a PNG to ``path``."""
    _save_figure(example_figure(title, signals, masks, fc, tc), path)


def example_figure(title: str, signals: dict[str, np.ndarray], masks: dict[str, np.ndarray], fc, tc):
    """Energies of the signals in dB and the masks, one titled panel each, frequency in Hz, with colour bars.

    signals: name → waveform (clean, noisy and each system's output, shown in that order); masks: name → mask
    (n_frames, n_units). Energy panels share one colour scale: dB re 1 (squared waveform units, full scale 1),
    from the loudest T-F unit of the example down :data:`DYNAMIC_RANGE_DB`.
    """
    domain = "cochleagram" if tc.domain == "cochleagram" else "spectrogram"
    energies = {k: 10 * np.log10(_representation(v, fc, tc) + 1e-10) for k, v in signals.items()}
    top = max(float(np.max(e)) for e in energies.values())
    target = tc.kind.upper()
    panels = [(f"{_SIGNAL_TITLES.get(k, k + ' output')}: {domain}", e, "dB") for k, e in energies.items()]
    panels += [(f"{'ideal' if k == 'ideal' else k + ' estimated'} mask ({target})", m.T, "mask")
               for k, m in masks.items()]  # fmt: skip
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.5, 1.9 * len(panels) + 0.4), dpi=100, sharex=True,
                             squeeze=False)  # fmt: skip
    seconds = fc.hop_length / fc.sr
    for ax, (label, image, unit) in zip(axes[:, 0], panels, strict=True):
        is_mask = unit == "mask"
        n_rows = image.shape[0]
        freqs = channel_frequencies(fc, tc, n_rows)
        im = ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest",
                       vmin=0.0 if is_mask else top - DYNAMIC_RANGE_DB, vmax=1.0 if is_mask else top,
                       cmap="viridis" if is_mask else "magma",
                       extent=(0, image.shape[1] * seconds, -0.5, n_rows - 0.5))  # fmt: skip
        rows = np.arange(n_rows)
        _hz_ticks(ax.yaxis, float(freqs[0]), float(freqs[-1]), position=lambda f, fr=freqs, r=rows: np.interp(f, fr, r))
        ax.set_ylabel("frequency (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(label, fontsize=9, loc="left")
        bar = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
        bar.set_label("dB" if not is_mask else "mask value", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


# The report's files of fixed name (examples add example-N.png and audio/example-N/*.wav).
REPORT_FILES = ("results.md", "results.csv", "results.json", "files.csv", "run.json", "channel_mse.png", "index.html")


def check_report_folder(run_dir: Path, n_examples: int = 0) -> None:
    """Refuse, before any scoring, a report folder that cannot take the report: it or a folder above it is a file,
    one of its files is a folder, or ``audio`` is a file. Raises SpeechkernError naming the path."""
    out = Path(run_dir) / "report"
    for name in [*REPORT_FILES, *(f"example-{n}.png" for n in range(n_examples))]:
        check_writable(out / name)
    if (out / "audio").exists() and not (out / "audio").is_dir():
        raise SpeechkernError(f"{out / 'audio'}: is a file, where the report keeps its example audio; move it away")


def report_exists(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a whole report: its page, written last (the files of a report whose writing was
    interrupted are replaced without asking)."""
    return (Path(run_dir) / "report" / "index.html").exists()


def write_report(ev: Evaluation, run_dir: Path, overwrite: bool = False) -> Path:
    """Write every table, figure, example and the HTML page under ``run_dir/report``; returns that folder.

    Raises SpeechkernError for a whole report there already (:func:`report_exists`) unless ``overwrite``, and for
    a report folder that cannot take the files (:func:`check_report_folder`).
    """
    out = run_dir / "report"
    if report_exists(run_dir) and not overwrite:
        raise SpeechkernError(f"{out}: a report exists already; pass overwrite=True to replace it")
    check_report_folder(run_dir, len(ev.example_masks))  # before the first file: no half-replaced report
    remove_parts(out)  # the unfinished writes of a killed evaluation
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.md", results_markdown(ev.rows))
    write_text(out / "results.csv", results_csv(ev.rows))
    write_text(out / "results.json", json.dumps(results_json(ev), indent=2))
    write_text(out / "files.csv", _files_csv(ev))
    summary = run_summary(ev, run_dir)
    write_text(out / "run.json", json.dumps(_json_safe(summary), indent=2))
    plot_channel_mse(ev, out / "channel_mse.png")

    fc, tc = ev.recipe.features, ev.recipe.target
    examples = []
    audio_dir = out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    for old in out.glob("example-*.png"):  # an earlier report's with more examples: shown beside the new ones
        if re.fullmatch(r"example-\d+\.png", old.name) and old.is_file():
            old.unlink()
    by_id = {m.id: m for m in read_run_manifest(run_dir, "test")}
    for n, (mid, masks) in enumerate(ev.example_masks.items()):
        mixture = by_id[mid]
        mix, clean, _ = mixture.build()
        masks = {k: masks[k] for k in _table_order(masks)}
        # clean speech first as the reference, then the systems in the results table's order
        signals = {"clean": clean, "noisy": mix} | {k: apply_mask(mix, m, (fc, tc)) for k, m in masks.items()}
        players = {}
        for name, y in signals.items():
            rel = f"audio/example-{n}/{name}.wav"
            audio.save(out / rel, np.clip(y, -1, 1), mixture.sr, overwrite=True)
            players[name] = rel
        figure = f"example-{n}.png"
        shown = {k: y for k, y in signals.items() if k != "ideal"}
        plot_example(f"{mid} ({mixture.condition})", shown, masks, fc, tc, out / figure)
        examples.append({"id": mid, "condition": mixture.condition, "figure": figure, "audio": players})
    write_text(out / "index.html", _html(ev, examples, summary))
    return out


# --------------------------------------------------------------------------------------------------------------
# What the run was: training times, chosen kernels, data sizes, completeness


def run_summary(ev: Evaluation, run_dir: Path) -> dict:
    """Facts about the run a reader needs beside the scores, read from the run directory's files.

    Returns ``{"complete", "notes", "training", "kernels", "data"}``: ``training`` holds the rows of
    ``training_time.json`` (fit and autotune minutes, epochs, validation MSE); ``kernels`` the (γ, σ) chosen for
    each subband of each kernel model (from its ``config.json``); ``data`` the mixtures and seconds of audio per
    split and the frames each model was trained on; ``notes`` says what is missing when ``complete`` is False.
    """
    recipe = ev.recipe
    manifests = {}
    for split in ("train", "val", "test"):
        path = run_dir / "manifests" / f"{split}.jsonl"
        manifests[split] = read_run_manifest(run_dir, split) if path.is_file() else []
    data = {
        split: {"mixtures": len(rows), "seconds": round(sum(m.n_samples / m.sr for m in rows), 1)}
        for split, rows in manifests.items()
    }
    data["test"]["scored"] = len(ev.files)
    data["train"]["max_frames"] = recipe.train.max_train_frames
    data["val"]["max_frames"] = recipe.train.max_val_frames

    timing_path = run_dir / "training_time.json"
    training, unreadable = [], None
    if timing_path.is_file():
        try:
            training = json.loads(timing_path.read_text(encoding="utf-8"))["rows"]
            if not (isinstance(training, list) and all(isinstance(r, dict) for r in training)):
                raise TypeError("its rows are not a list of tables")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            training = []
            unreadable = (f"{timing_path.name} is unreadable ({type(err).__name__}: {err}); the training times are "
                          "left out (training again with resume=True writes it anew)")  # fmt: skip

    kernels, trained, unreadable_models = [], {}, []
    models_dir = run_dir / "models"
    for config_path in sorted(models_dir.glob("*/config.json")) + sorted(models_dir.glob("*/*/config.json")):
        folder = config_path.parent
        name = folder.name if folder.parent == models_dir else folder.parent.name
        condition = "all" if folder.parent == models_dir else folder.name
        if name.startswith("."):
            continue
        info, problem = _model_info(config_path)
        if problem:
            unreadable_models.append(f"{config_path.relative_to(run_dir)} is unreadable ({problem}); that model "
                                     "folder is left out of this summary")  # fmt: skip
            continue
        trained.setdefault(name, []).append(condition)
        for b, band in enumerate(info.get("bands", [])):
            if not isinstance(band, dict):
                continue
            pair = band.get("band")
            lo, hi = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
            kernels.append({"model": name, "condition": condition, "subband": b + 1, "channels": [lo, hi],
                            "gamma": band.get("gamma"), "sigma": band.get("sigma"), "epochs": band.get("epochs"),
                            "val_mse": band.get("val_mse")})  # fmt: skip

    notes = ([unreadable] if unreadable else []) + unreadable_models
    per_condition = recipe.train.mode == "per-condition"
    conditions = sorted({m.condition for m in manifests["train"]}) if per_condition else ["all"]
    for name in run_models(run_dir):
        missing = [c for c in conditions if c not in trained.get(name, [])]
        if missing:
            where = "" if missing == ["all"] else f" for {', '.join(missing)}"
            notes.append(f"model {name} was not trained{where} (finish it by training again with resume=True)")
    leftovers = sorted(p.name for p in models_dir.glob(".*") if p.is_dir() and any(f.is_file() for f in p.rglob("*")))
    if leftovers:
        notes.append(f"interrupted training left {', '.join(leftovers)} in models/")
    n_test = data["test"]["mixtures"]
    if len(ev.files) < n_test:
        notes.append(f"{len(ev.files)} of {n_test} test mixtures scored (the evaluation was limited)")
    if ev.problems:
        notes.append(f"{len(ev.problems)} scores could not be computed (listed below)")
    return {"complete": not notes, "notes": notes, "training": training, "kernels": kernels, "data": data}


def _model_info(config_path: Path) -> tuple[dict, str | None]:
    """The ``info`` object of a model's config.json, or ({}, why not) when it is a folder, no UTF-8 JSON object,
    or its info is no object: the report then notes the model as missing instead of failing."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or not isinstance(config.get("info", {}), dict):
            raise TypeError("no JSON object with an info object")
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        return {}, f"{type(err).__name__}: {err}"
    info = config.get("info", {})
    return (info if isinstance(info.get("bands", []), list) else {**info, "bands": []}), None


def _mse(value) -> str:
    return "–" if value is None else f"{value:.5f}"


def _state_html(summary: dict) -> str:
    return (
        "<p class=complete>The run is complete: every requested model is trained and every test mixture scored.</p>"
        if summary["complete"]
        else "<p class=incomplete><b>The run is incomplete:</b></p><ul>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
        + "</ul>"
    )


def _summary_html(summary: dict) -> str:
    data = summary["data"]
    data_rows = "".join(
        f"<tr><td>{split}</td><td>{d['mixtures']}</td><td>{d['seconds'] / 60:.1f}</td></tr>"
        for split, d in data.items()
    )
    frames = (
        f"Models train on at most {data['train']['max_frames'] or 'all'} frames drawn from the training mixtures "
        f"and stop early on at most {data['val']['max_frames'] or 'all'} validation frames; "
        f"{data['test']['scored']} test mixtures are scored."
    )
    timing_rows = (
        "".join(
            f"<tr><td>{html.escape(str(r['model']))}</td><td>{html.escape(str(r['condition']))}</td>"
            f"<td>{r.get('subbands', '')}</td><td>{r.get('centers', '–')}</td>"
            f"<td>{format_minutes(r.get('minutes'))}</td>"
            f"<td>{format_minutes(r.get('autotune_minutes'))}</td><td>{format_minutes(r.get('transform_minutes'))}</td>"
            f"<td>{r.get('epochs', '')}</td>"
            f"<td>{_mse(r.get('val_mse'))}</td></tr>"
            for r in summary["training"]
        )
        or "<tr><td colspan=9>no training_time.json in the run directory</td></tr>"
    )
    kernel_rows = (
        "".join(
            f"<tr><td>{html.escape(k['model'])}</td><td>{html.escape(k['condition'])}</td><td>{k['subband']}</td>"
            f"<td>{k['channels'][0] + 1}–{k['channels'][1]}</td><td>{k['gamma']:g}</td><td>{k['sigma']:.4g}</td>"
            f"<td>{k['epochs'] if k['epochs'] is not None else '–'}</td>"
            f"<td>{_mse(k['val_mse'])}</td></tr>"
            for k in summary["kernels"]
            if k["gamma"] is not None and k["sigma"] is not None
        )
        or "<tr><td colspan=8>no kernel model in this run</td></tr>"
    )
    return f"""<h2>The run</h2>
<h3>Data</h3>
<table><thead><tr><th>split</th><th>mixtures</th><th>minutes of audio</th></tr></thead>
<tbody>{data_rows}</tbody></table>
<p>{frames}</p>
<h3>Training time</h3>
<table><thead><tr><th>model</th><th>condition</th><th>subbands</th><th>training frames</th><th>fit minutes</th>
<th>autotune minutes</th><th>transform minutes</th><th>epochs</th><th>validation MSE</th></tr></thead>
<tbody>{timing_rows}</tbody></table>
<h3>Kernels chosen by autotune (γ shape, σ bandwidth)</h3>
<table><thead><tr><th>model</th><th>condition</th><th>subband</th><th>channels</th><th>γ</th><th>σ</th><th>epochs</th>
<th>validation MSE</th></tr></thead><tbody>{kernel_rows}</tbody></table>
"""


def _files_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "condition", "system", *METRICS])
    for f in ev.files:
        for system, values in f.scores.items():
            writer.writerow([f.id, f.condition, system, *[values.get(m, "") for m in METRICS]])
    return buf.getvalue()


_PLAYER_LABELS = {"clean": "clean (reference)", "noisy": "noisy input", "ideal": "ideal mask"}


def _html(ev: Evaluation, examples: list[dict], summary: dict) -> str:
    present = [m for m in METRICS if any(m in r for r in ev.rows)]
    head = "".join(f"<th>{html.escape(LABELS[m])}</th>" for m in present)
    body = "".join(
        f"<tr><td>{html.escape(r['condition'])}</td><td>{html.escape(r['system'])}</td><td>{r['n_files']}</td>"
        + "".join(f"<td>{_fmt(m, r.get(m))}</td>" for m in present) + "</tr>"
        for r in ev.rows
    )  # fmt: skip
    sections = []
    for ex in examples:
        players = "".join(
            f"<figure><figcaption>{html.escape(_PLAYER_LABELS.get(name, name))}</figcaption>"
            f'<audio controls preload="none" '
            f'src="{html.escape(src)}"></audio></figure>'
            for name, src in ex["audio"].items()
        )
        sections.append(
            f"<section><h3>{html.escape(ex['id'])} <small>{html.escape(ex['condition'])}</small></h3>"
            f'<div class="players">{players}</div>'
            f'<img src="{html.escape(ex["figure"])}" alt="time-frequency view of {html.escape(ex["id"])}"></section>'
        )
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in ev.problems) or "<li>none</li>"
    recipe = ev.recipe
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>speechkern report: {html.escape(recipe.name)}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:14px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:nth-child(-n+2){{text-align:left}}img{{max-width:100%}}.players{{display:flex;flex-wrap:wrap;gap:1em}}
figure{{margin:0}}figcaption{{font-size:13px;color:#555}}.incomplete{{color:#a00}}.complete{{color:#060}}
</style></head><body>
<h1>speechkern report: {html.escape(recipe.name)}</h1>
<p>Test split of the run, target {html.escape(recipe.target.kind.upper())} in the {html.escape(recipe.target.domain)}
domain, features {html.escape(recipe.features.kind)}. Means over test files per condition (noise × SNR);
"pooled" mask measures are taken over every T-F unit of the condition at once, as the OSU PNL toolbox reports
them, so long files weigh more than in the file mean.</p>
{_state_html(summary)}
<h2>Results</h2>
<table><thead><tr><th>condition</th><th>system</th><th>files</th>{head}</tr></thead><tbody>{body}</tbody></table>
<p>Also as <a href="results.csv">CSV</a>, <a href="results.json">JSON</a>, <a href="results.md">Markdown</a>;
every file's scores in <a href="files.csv">files.csv</a>.</p>
{_summary_html(summary)}
<p>As JSON: <a href="run.json">run.json</a>.</p>
<h2>Mask error per channel</h2>
<img src="channel_mse.png" alt="mask MSE per frequency channel">
<h2>Examples</h2>
{"".join(sections) or "<p>No examples.</p>"}
<h2>Files that could not be scored</h2><ul>{problems}</ul>
</body></html>
"""
