"""The report a researcher reads: figures with Hz and dB, players in the table's order, no "-0.0", and what the
run was (training times, chosen kernels, data sizes, complete or not)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from speechkern import report
from speechkern.errors import SpeechkernError


@pytest.mark.parametrize(
    "metric, value, text",
    [("si_sdr", -0.04, "0.0"), ("si_sdr", -0.06, "-0.1"), ("mse", -1e-6, "0.00"), ("pesq", -0.001, "0.00"),
     ("stoi", -0.0004, "0.000"), ("hit_fa", -0.0, "0.000"), ("si_sdr", 0.04, "0.0"), ("mse", 0.0123, "1.23")],
)  # fmt: skip
def test_values_that_round_to_zero_have_no_sign(metric, value, text):
    assert report._fmt(metric, value) == text


def test_markdown_never_prints_negative_zero():
    rows = [{"condition": "ssn_0dB", "system": s, "n_files": 2, "si_sdr": v, "mse": -1e-9, "stoi": -1e-5}
            for s, v in (("noisy", -0.049), ("ideal", 12.3))]  # fmt: skip
    assert "-0." not in report.results_markdown(rows)


def _run_json(out):
    return json.loads((out / "run.json").read_text())


def test_report_states_training_times_kernels_data_and_completeness(tiny_report, tiny_run):
    from speechkern.mixtures import read_manifest

    ev, out = tiny_report
    _, root, _ = tiny_run
    run = root / "run"
    summary = _run_json(out)
    assert summary["complete"] is True and summary["notes"] == []
    # data sizes: every split's mixtures and seconds of audio, from the manifests
    for split in ("train", "val", "test"):
        rows = read_manifest(run / "manifests" / f"{split}.jsonl")
        assert summary["data"][split]["mixtures"] == len(rows) > 0
        assert summary["data"][split]["seconds"] == pytest.approx(sum(m.n_samples / m.sr for m in rows), abs=0.1)
    assert summary["data"]["test"]["scored"] == len(ev.files)
    # training times: fit and autotune minutes of each model
    timings = {r["model"]: r for r in summary["training"]}
    assert set(timings) == {"kernel", "dnn"} and timings["kernel"]["autotune_minutes"] >= 0
    # the (γ, σ) chosen for each subband, as the model stores them
    config = json.loads((run / "models" / "kernel" / "config.json").read_text())
    chosen = [(b["gamma"], b["sigma"]) for b in config["info"]["bands"]]
    assert len(chosen) == 2  # TINY: kernel.subbands=2
    assert [(k["gamma"], k["sigma"]) for k in summary["kernels"]] == chosen
    assert [k["channels"] for k in summary["kernels"]] == [[0, 32], [32, 64]]
    page = (out / "index.html").read_text()
    assert "The run is complete" in page and "autotune minutes" in page and "fit minutes" in page
    for gamma, sigma in chosen:
        assert f"<td>{gamma:g}</td><td>{sigma:.4g}</td>" in page


def test_an_interrupted_or_partly_scored_run_says_so(tiny_report, tiny_run, tmp_path):
    ev, _ = tiny_report
    _, root, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy, ignore=shutil.ignore_patterns("report", "*.safetensors"))
    shutil.rmtree(copy / "models" / "dnn")
    (copy / "models" / ".dnn-checkpoint" / "all").mkdir(parents=True, exist_ok=True)
    (copy / "models" / ".dnn-checkpoint" / "all" / "checkpoint.json").write_text("{}")
    ev.files, files = ev.files[:1], ev.files
    try:
        summary = report.run_summary(ev, copy)
    finally:
        ev.files = files
    assert summary["complete"] is False
    notes = " | ".join(summary["notes"])
    assert "model dnn was not trained" in notes and "resume=True" in notes
    assert ".dnn-checkpoint" in notes
    assert f"1 of {summary['data']['test']['mixtures']} test mixtures scored" in notes
    assert "The run is incomplete" in report._state_html(summary)


@pytest.mark.parametrize("text", ["{not json", '{"rows": 3}', "[]", '{"rows": [1]}'])
def test_a_damaged_training_time_file_is_a_note_not_a_traceback(tiny_report, tiny_run, tmp_path, text):
    """A garbage training_time.json stopped `speechkern evaluate` with a JSONDecodeError (or KeyError) traceback."""
    ev, _ = tiny_report
    _, root, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy, ignore=shutil.ignore_patterns("report", "*.safetensors"))
    (copy / "training_time.json").write_text(text)
    summary = report.run_summary(ev, copy)
    assert summary["training"] == [] and summary["complete"] is False
    assert any(n.startswith("training_time.json is unreadable (") for n in summary["notes"]), summary["notes"]


@pytest.mark.parametrize(
    "content", [None, b"\xff\xfe\x00binary", b"[]", b'{"info": 3}', b'{"info": {"bands": [3, {"band": 5}]}}']
)
def test_an_odd_model_config_is_a_note_not_a_traceback(tiny_report, tiny_run, tmp_path, content):
    """A model folder whose config.json was a folder (or binary, or no object) stopped `speechkern evaluate` with
    an IsADirectoryError (UnicodeDecodeError, AttributeError) traceback after every file was scored."""
    ev, _ = tiny_report
    _, root, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy, ignore=shutil.ignore_patterns("report", "*.safetensors"))
    config = copy / "models" / "dnn" / "config.json"
    config.unlink()
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    summary = report.run_summary(ev, copy)
    notes = " | ".join(summary["notes"])
    if content is None or content in (b"\xff\xfe\x00binary", b"[]", b'{"info": 3}'):
        assert "models/dnn/config.json is unreadable (" in notes and summary["complete"] is False
        assert "model dnn was not trained" in notes
    else:  # readable with odd bands: the number is skipped, the band without channels has unknown channels
        assert [k["channels"] for k in summary["kernels"] if k["model"] == "dnn"] == [[None, None]]
    assert [k["model"] for k in summary["kernels"] if k["model"] != "dnn"] == ["kernel", "kernel"]


@pytest.mark.parametrize("blocker", ["run.json", "index.html", "channel_mse.png", "audio"])
def test_a_report_file_in_the_way_is_refused_before_scoring_and_writing(
    tiny_report, tiny_run, tmp_path, capsys, blocker
):
    """report/run.json (or index.html, ...) as a folder failed only after every file was scored, and after
    results.md/.csv/.json had been replaced: a half-new report. report/audio as a file: NotADirectoryError."""
    from conftest import run_cli

    ev, _ = tiny_report
    _, root, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy)
    (copy / "report" / "results.md").write_text("the old report")
    target = copy / "report" / blocker
    if target.is_dir():
        shutil.rmtree(target)
        target.write_text("x")
    else:
        target.unlink(missing_ok=True)
        target.mkdir()
    with pytest.raises(SpeechkernError, match=blocker):
        report.write_report(ev, copy, overwrite=True)
    assert (copy / "report" / "results.md").read_text() == "the old report"
    code, _, err = run_cli(["evaluate", str(copy), "--overwrite", "--workers", "1", "-q"], capsys)
    assert code != 0 and "Traceback" not in err and err.strip().count("\n") == 0 and blocker in err
    assert "warning" not in err  # refused before the run was even read
    assert (copy / "report" / "results.md").read_text() == "the old report"


def test_audio_players_follow_the_results_table(tiny_report):
    ev, out = tiny_report
    page = (out / "index.html").read_text()
    table_systems = list(dict.fromkeys(r["system"] for r in ev.rows))
    assert table_systems[:2] == ["noisy", "ideal"]
    for section in re.findall(r"<section>.*?</section>", page, re.S):
        sources = re.findall(r'src="audio/example-\d+/(\w+)\.wav"', section)
        assert sources == ["clean", *table_systems], sources


def test_example_figure_has_hz_axes_db_colour_bars_and_titles(tiny_report):
    import matplotlib.pyplot as plt

    ev = tiny_report[0]
    fc, tc = ev.recipe.features, ev.recipe.target
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    n_frames = 1 + len(y) // fc.hop_length
    masks = {"ideal": rng.random((n_frames, fc.n_channels)), "kernel": rng.random((n_frames, fc.n_channels))}
    fig = report.example_figure("demo", {"clean": y, "noisy": 2 * y, "kernel": y}, masks, fc, tc)
    try:
        image_axes = [ax for ax in fig.axes if ax.images]
        bars = [ax for ax in fig.axes if not ax.images]
        titles = [ax.get_title(loc="left") for ax in image_axes]
        assert titles == ["clean speech: cochleagram", "noisy mixture: cochleagram", "kernel output: cochleagram",
                          "ideal mask (IRM)", "kernel estimated mask (IRM)"]  # fmt: skip
        for ax in image_axes:
            assert ax.get_ylabel() == "frequency (Hz)"
            labels = [t.get_text() for t in ax.get_yticklabels()]
            assert labels == ["100", "250", "500", "1k", "2k", "4k", "8k"], labels
            # the 1 kHz tick sits on the channel whose centre frequency is 1 kHz
            from speechkern.gammatone import erb_space

            position = ax.get_yticks()[labels.index("1k")]
            assert np.interp(position, np.arange(fc.n_channels), erb_space(fc.fmin, fc.fmax, fc.n_channels)) == (
                pytest.approx(1000.0, rel=1e-3)
            )
        assert [bar.get_ylabel() for bar in bars] == ["dB"] * 3 + ["mask value"] * 2
        low, high = image_axes[0].images[0].get_clim()
        assert high - low == pytest.approx(report.DYNAMIC_RANGE_DB)
    finally:
        plt.close(fig)


def test_the_report_formats_minutes_with_the_pipelines_one_function():
    """report._minutes restated pipeline.format_minutes: the training-time tables had two formatters."""
    from speechkern import pipeline, report

    assert not hasattr(report, "_minutes") and report.format_minutes is pipeline.format_minutes
    assert pipeline.format_minutes(None) == "–" and pipeline.format_minutes(1.234) == "1.23"


def test_an_evaluation_stopped_while_writing_its_report_runs_again_without_overwrite(tiny_run, tmp_path, capsys,
                                                                                    monkeypatch):  # fmt: skip
    """Interrupted after results.json (or killed: a .part file left), the report was taken as whole: the same
    command refused it, 'a report exists already; pass --overwrite', with no page written."""
    from conftest import run_cli

    _, root, _ = tiny_run
    run = shutil.copytree(root / "run", tmp_path / "run", ignore=shutil.ignore_patterns("report"))
    argv = ["evaluate", str(run), "--workers", "1", "--limit", "1", "-q"]

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(report, "run_summary", interrupted)
        code, _, err = run_cli(argv, capsys)
    assert code == 130 and (run / "report" / "results.json").is_file() and not report.report_exists(run), err
    (run / "report" / ".index.html.abcd1234.part").write_text("<html")
    code, out, err = run_cli(argv, capsys)
    assert code == 0 and report.report_exists(run), err
    assert not list((run / "report").glob(".*.part"))
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "a report exists already; pass --overwrite" in err


def test_an_earlier_reports_extra_example_figures_are_removed(tiny_report, tiny_run, tmp_path):
    """A report written again with fewer examples (evaluate --limit 1 --overwrite) kept the earlier report's
    example-1.png beside the new example-0.png: a figure of another evaluation, in the folder of this one."""
    ev, _ = tiny_report
    _, root, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy)
    (copy / "report" / "example-7.png").write_bytes(b"an earlier report's figure")
    (copy / "report" / "example-notes.png").write_bytes(b"not a figure of ours")
    out = report.write_report(ev, copy, overwrite=True)
    figures = sorted(p.name for p in out.glob("example-*.png"))
    assert figures == [f"example-{n}.png" for n in range(len(ev.example_masks))] + ["example-notes.png"]
