"""Reports a researcher can publish: tables (Markdown, CSV, JSON), figures (PNG) and one HTML page.

Everything lands in ``RUN_DIR/report/``: ``results.{md,csv,json}`` (per condition and system, as the paper's
Tables 6.1–6.3), ``files.csv`` (every file's scores), ``channel_mse.png`` (the paper's Figure 6.2),
``example-*.png`` (noisy, clean and enhanced time–frequency representations with the ideal and estimated
masks), ``audio/`` (a few examples to listen to) and ``index.html`` tying them together.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from speechkern import audio  # noqa: E402
from speechkern.enhance import apply_mask  # noqa: E402
from speechkern.errors import SpeechkernError  # noqa: E402
from speechkern.evaluate import METRICS, Evaluation  # noqa: E402
from speechkern.outputs import write_text  # noqa: E402

LABELS = {
    "mse": "MSE ×10⁻² (file mean)", "mse_pooled": "MSE ×10⁻² (pooled)", "stoi": "STOI", "estoi": "ESTOI",
    "pesq": "PESQ-WB", "pesq_nb": "PESQ-NB", "si_sdr": "SI-SDR (dB)", "accuracy": "accuracy",
    "hit_fa": "HIT−FA (file mean)", "hit_fa_pooled": "HIT−FA (pooled)",
}  # fmt: skip


def _fmt(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric in ("mse", "mse_pooled"):
        return f"{100 * value:.2f}"
    if metric == "si_sdr":
        return f"{value:.1f}"
    return f"{value:.3f}" if metric in ("stoi", "estoi", "accuracy", "hit_fa", "hit_fa_pooled") else f"{value:.2f}"


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


def plot_channel_mse(ev: Evaluation, path: Path) -> None:
    """Mask MSE per frequency channel for each model (the paper's Figure 6.2)."""
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for name, curve in ev.channel_mse.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name, linewidth=1.5)
    ax.set_xlabel("frequency channel (low → high)")
    ax.set_ylabel("mask MSE")
    ax.set_title("Mask MSE per channel on the test split")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def _representation(y: np.ndarray, fc, tc) -> np.ndarray:
    """Energies (n_units, n_frames) in the target's domain, for display."""
    if tc.domain == "cochleagram":
        from speechkern import gammatone

        return gammatone.cochleagram(y, sr=fc.sr, n_channels=fc.n_channels, fmin=fc.fmin, fmax=fc.fmax,
                                     frame_length=fc.frame_length, hop_length=fc.hop_length)  # fmt: skip
    from speechkern import stft

    return stft.power_spectrogram(y, frame_length=fc.frame_length, hop_length=fc.hop_length)


def plot_example(title: str, signals: dict[str, np.ndarray], masks: dict[str, np.ndarray], fc, tc, path: Path):
    """Log energies of the noisy, clean and enhanced signals, and the ideal and estimated masks."""
    panels = [(f"{k} (dB)", 10 * np.log10(_representation(v, fc, tc) + 1e-10)) for k, v in signals.items()]
    panels += [(f"{k} mask", m.T) for k, m in masks.items()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.6 * len(panels)), dpi=100, sharex=True)
    seconds = fc.hop_length / fc.sr
    for ax, (label, image) in zip(np.atleast_1d(axes), panels, strict=True):
        is_mask = label.endswith("mask")
        vmax = 1.0 if is_mask else float(np.max(image))
        vmin = 0.0 if is_mask else vmax - 80.0
        cmap = "viridis" if is_mask else "magma"
        ax.imshow(image, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap,
                  extent=(0, image.shape[1] * seconds, 0, image.shape[0]))  # fmt: skip
        ax.set_ylabel(label, fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_report(ev: Evaluation, run_dir: Path, overwrite: bool = False) -> Path:
    """Write every table, figure, example and the HTML page under ``run_dir/report``; returns that folder."""
    out = run_dir / "report"
    if (out / "results.json").exists() and not overwrite:
        raise SpeechkernError(f"{out}: a report exists already; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.md", results_markdown(ev.rows))
    write_text(out / "results.csv", results_csv(ev.rows))
    write_text(out / "results.json", json.dumps(results_json(ev), indent=2))
    write_text(out / "files.csv", _files_csv(ev))
    plot_channel_mse(ev, out / "channel_mse.png")

    fc, tc = ev.recipe.features, ev.recipe.target
    examples = []
    audio_dir = out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    from speechkern.mixtures import read_manifest

    by_id = {m.id: m for m in read_manifest(run_dir / "manifests" / "test.jsonl")}
    for n, (mid, masks) in enumerate(ev.example_masks.items()):
        mixture = by_id[mid]
        mix, clean, _ = mixture.build()
        signals = {"noisy": mix, "clean": clean}
        players = {}
        for system, mask in masks.items():
            signals[system] = apply_mask(mix, mask, (fc, tc))
        for name, y in signals.items():
            rel = f"audio/example-{n}/{name}.wav"
            audio.save(out / rel, np.clip(y, -1, 1), mixture.sr, overwrite=True)
            players[name] = rel
        figure = f"example-{n}.png"
        shown = {k: signals[k] for k in ("noisy", "clean") + tuple(k for k in masks if k != "ideal")}
        plot_example(f"{mid} ({mixture.condition})", shown, masks, fc, tc, out / figure)
        examples.append({"id": mid, "condition": mixture.condition, "figure": figure, "audio": players})
    write_text(out / "index.html", _html(ev, examples))
    return out


def _files_csv(ev: Evaluation) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "condition", "system", *METRICS])
    for f in ev.files:
        for system, values in f.scores.items():
            writer.writerow([f.id, f.condition, system, *[values.get(m, "") for m in METRICS]])
    return buf.getvalue()


def _html(ev: Evaluation, examples: list[dict]) -> str:
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
            f'<figure><figcaption>{html.escape(name)}</figcaption><audio controls preload="none" '
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
figure{{margin:0}}figcaption{{font-size:13px;color:#555}}
</style></head><body>
<h1>speechkern report: {html.escape(recipe.name)}</h1>
<p>Test split of the run, target {html.escape(recipe.target.kind.upper())} in the {html.escape(recipe.target.domain)}
domain, features {html.escape(recipe.features.kind)}. Means over test files per condition (noise × SNR);
"pooled" mask measures are taken over every T-F unit of the condition at once, as the OSU PNL toolbox reports
them, so long files weigh more than in the file mean.</p>
<h2>Results</h2>
<table><thead><tr><th>condition</th><th>system</th><th>files</th>{head}</tr></thead><tbody>{body}</tbody></table>
<p>Also as <a href="results.csv">CSV</a>, <a href="results.json">JSON</a>, <a href="results.md">Markdown</a>;
every file's scores in <a href="files.csv">files.csv</a>.</p>
<h2>Mask error per channel</h2>
<img src="channel_mse.png" alt="mask MSE per frequency channel">
<h2>Examples</h2>
{"".join(sections) or "<p>No examples.</p>"}
<h2>Files that could not be scored</h2><ul>{problems}</ul>
</body></html>
"""
