"""benchmarks/peers.py end to end on two short noisy/clean pairs, peers that are not installed skipped."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from speechkern import audio
from speechkern.synth import TALKERS, synthesize

ROOT = Path(__file__).resolve().parents[1]
PEERS = {"RNNoise": "pyrnnoise", "noisereduce": "noisereduce"}


def _pairs(folder: Path) -> None:
    rng = np.random.default_rng(3)
    for i, snr_db in enumerate((0.0, 10.0)):
        clean = synthesize(TALKERS[i], 3.0, seed=i)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= np.sqrt(np.sum(clean**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
        audio.save(folder / "clean" / f"u{i}.wav", clean, 16000)
        audio.save(folder / "noisy" / f"u{i}.wav", clean + noise, 16000)


def _peers_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import peers
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return peers


def test_peers_runs_end_to_end_on_two_pairs(tmp_path, capsys):
    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    _pairs(tmp_path)
    out = tmp_path / "out"
    argv = ["--pairs", str(tmp_path / "noisy"), str(tmp_path / "clean"), "--out", str(out), "--threads", "1"]
    import torch

    threads = torch.get_num_threads()
    try:
        assert _peers_module().main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # main() sets --threads for the whole process
    stderr = capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    assert result["systems"][0] == "speechkern"
    for peer, module in PEERS.items():
        if importlib.util.find_spec(module) is None:
            assert peer not in result["systems"]
            assert f"{peer} skipped" in stderr and "pip install 'speechkern[peers]'" in stderr
        else:
            assert peer in result["systems"]
    # the pairs' SNRs are measured from the files: 0 and 10 dB, one file each, plus the mean over both
    assert set(result["table"]) == {"0", "10", "all"} and result["table"]["all"]["n"] == 2
    for system in result["systems"]:
        row = result["table"]["0"][system]
        assert 0.0 < row["stoi"] <= 1.0 and np.isfinite(row["si_sdr"])
        assert result["speed"][system] > 0
    table = (out / "table.md").read_text()
    assert "| 0 (n=1) | speechkern |" in table and "Change over the noisy input" in table
    assert (out / "plot.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="overwrite=True"):  # results are not replaced silently
        _peers_module().main(argv)


def test_rnnoise_output_is_aligned_with_its_input():
    """RNNoise lags its input by 20 ms; peers.py removes the lag, so the output's cross-correlation with the
    input peaks at lag 0."""
    pytest.importorskip("pyrnnoise", reason="pyrnnoise not installed (pip install 'speechkern[peers]')")
    run, _ = _peers_module().rnnoise()
    clean = synthesize(TALKERS[0], 2.0, seed=0)
    x = clean + 0.01 * np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    y = run(x, 16000)
    assert len(y) == len(x)
    lags = np.arange(-400, 401)
    corr = [np.dot(y[max(0, k) : len(y) + min(0, k)], x[max(0, -k) : len(x) - max(0, k)]) for k in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 1


@pytest.mark.parametrize(
    ("option", "says"),
    [(["--utterances", "-1"], r"^--utterances -1: expected a count"), (["--threads", "0"], r"^--threads 0: expected"),
     (["--snrs", "1e300"], r"^--snrs 1e\+300: expected distinct finite SNRs in dB from -100 to 100")],  # Overflow
)  # fmt: skip
def test_odd_counts_stop_in_one_line_before_the_work(tmp_path, monkeypatch, option, says):
    """--utterances -1 with --pairs scored every pair but the last (a slice from the end); --threads 0 stopped in
    torch's RuntimeError."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    peers = _peers_module()
    monkeypatch.setattr(peers, "pairs", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(SystemExit, match=says):
        peers.main(["--pairs", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "out"), *option])


def test_pairs_name_the_noisy_files_left_out_and_refuse_a_silent_reference(tmp_path, capsys):
    """A noisy file without a clean namesake was dropped without a word; a silent clean reference stopped in
    OverflowError (an SNR of -inf dB rounded to its 5-dB group)."""
    _pairs(tmp_path)
    audio.save(tmp_path / "noisy" / "alone.wav", np.full(16000, 0.1, np.float32), 16000)
    audio.save(tmp_path / "noisy" / "u0.flac", np.full(16000, 0.1, np.float32), 16000)  # clean has u0.wav only
    found = _peers_module().pairs(tmp_path / "noisy", tmp_path / "clean", 0)
    assert len(found) == 2
    err = capsys.readouterr().err
    assert "2 of the 4 noisy files have no namesake under" in err and "alone.wav, u0.flac" in err
    audio.save(tmp_path / "clean" / "alone.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(SystemExit, match=r"clean/alone\.wav: the clean reference of .*alone\.wav is silent"):
        _peers_module().pairs(tmp_path / "noisy", tmp_path / "clean", 0)


def test_a_model_that_is_none_or_of_another_rate_and_a_damaged_pair_stop_in_one_line(tmp_path):
    """--model pointing to a file or an empty folder stopped in a SpeechkernError traceback, a model of another
    rate only at the first file (after the data was loaded), and a damaged pair in a traceback too."""
    _pairs(tmp_path)
    (tmp_path / "empty").mkdir()
    argv = ["--pairs", str(tmp_path / "noisy"), str(tmp_path / "clean"), "--out", str(tmp_path / "out")]
    peers = _peers_module()
    for model in (tmp_path / "noisy" / "u0.wav", tmp_path / "empty"):
        with pytest.raises(SystemExit, match=rf"^--model {model}: {model}: "):
            peers.main([*argv, "--model", str(model)])
    (tmp_path / "noisy" / "u1.wav").write_text("not audio")
    with pytest.raises(SystemExit, match=r"noisy/u1\.wav: not a readable audio file"):
        peers.main(argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["peers.py", "paper_tables.py"])
def test_a_path_too_long_for_the_file_system_is_one_line(tmp_path, script, dev_data):
    """--out (or --pairs, --model) with a name too long for the file system ended in an OSError traceback (the
    scripts look for the development audio first, so the test needs it)."""
    import subprocess

    argv = [sys.executable, str(ROOT / "benchmarks" / script), "--out", "a" * 5000]
    argv += ["--quick"] if script == "paper_tables.py" else ["--utterances", "1"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-1000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "characters): the name is too long for the file system" in lines[0], out.stderr[-500:]


def test_the_means_are_over_the_same_files_for_every_metric_and_say_how_many_were_left_out():
    """With a NaN PESQ for one file the "all" row averaged STOI over every file and PESQ over the others, and a
    system's NaN left the noisy input's mean over more files than the system's; the count left out was not said."""
    peers = _peers_module()
    nan = float("nan")

    def row(group, stoi, pesq, system_stoi=None):
        noisy = {"stoi": stoi, "estoi": stoi, "pesq": pesq, "si_sdr": 1.0}
        other = dict(noisy, stoi=stoi + 0.1 if system_stoi is None else system_stoi)
        return {"group": group, peers.NOISY: noisy, "x": other}

    rows = [row("0", 0.5, 1.0), row("0", 0.9, nan), row("5", 0.7, 2.0), row("5", 0.3, 3.0, system_stoi=nan)]
    table = peers.summarise(rows, ["x"])
    assert (table["all"]["n"], table["all"]["left_out"]) == (2, 2)
    assert table["all"][peers.NOISY]["stoi"] == pytest.approx(0.6) and table["all"]["x"]["pesq"] == 1.5
    assert table["all"]["x"]["stoi"] - table["all"][peers.NOISY]["stoi"] == pytest.approx(0.1)
    assert (table["0"]["n"], table["0"]["left_out"], table["5"]["n"]) == (1, 1, 1)
    text = peers.markdown(table, ["x"], {"x": 10.0})
    assert "| all (n=2, 2 left out) | x |" in text and "| 0 (n=1, 1 left out) |" in text
    json.dumps(table)  # still a JSON table


def test_the_shipped_model_benchmark_averages_noisy_and_enhanced_over_the_same_mixtures():
    """shipped_model.py took each column's nanmean: a NaN enhanced PESQ left the noisy PESQ over one more mixture."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import shipped_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    nan = float("nan")
    rows = {0.0: {"pesq_noisy": [1.0, 3.0], "pesq_enhanced": [2.0, nan]}, 5.0: {"pesq_noisy": [nan], "x": [1.0]}}
    table = shipped_model.same_file_means(rows)
    assert table[0.0] == {"pesq_noisy": 1.0, "pesq_enhanced": 2.0, "n": 1}
    assert table[5.0]["n"] == 0 and np.isnan(table[5.0]["x"])
    # results.json and --json files are strict JSON: a mean over no mixture, or a failed PESQ, is null, not NaN
    text = json.dumps(shipped_model.json_safe({"table": table, "rows": [(nan, float("inf"))]}), allow_nan=False)
    assert json.loads(text)["table"]["5.0"]["x"] is None and '"rows": [[null, null]]' in text


def test_two_models_in_folders_named_alike_get_a_column_each(tmp_path, monkeypatch):
    """--model runs/a/models/kernel --model runs/b/models/kernel made one column "speechkern kernel": the second
    model's scores replaced the first's without a word; the same folder given twice did so too."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    peers = _peers_module()
    assert peers.model_labels(["runs/a/models/kernel", "runs/b/models/kernel", "runs/c"]) == [
        "a/models/kernel", "b/models/kernel", "c"]  # fmt: skip
    assert peers.model_labels(["x/run1", "y/run2"]) == ["run1", "run2"] and peers.model_labels([]) == []
    monkeypatch.setattr(peers, "pairs", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(SystemExit, match=r"^--model runs/a/: given twice \(as runs/a\); give each model once$"):
        peers.main(["--pairs", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "out"), "--model", "runs/a",
                    "--model", "runs/a/"])  # fmt: skip
    assert not (tmp_path / "out").exists()
