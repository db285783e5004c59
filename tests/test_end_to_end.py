"""Slow end-to-end runs as a user makes them (``pytest -m slow``): the demo, and the folder recipe on real audio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechkern_cli.main import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _cli(argv: list[str], capsys) -> str:
    try:
        main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def _rows(out: str) -> dict[tuple[str, str], dict]:
    return {(r["condition"], r["system"]): r for r in json.loads(out)["rows"]}


@pytest.mark.slow
def test_demo_recipe_beats_the_noisy_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPEECHKERN_CACHE", str(tmp_path / "cache"))
    _cli(["train", str(RECIPES / "demo"), "--quiet"], capsys)
    rows = _rows(_cli(["evaluate", "runs/demo", "--json"], capsys))
    noisy = rows[("all", "noisy")]
    for system in ("kernel", "dnn"):
        assert rows[("all", system)]["stoi"] > noisy["stoi"], system
        assert rows[("all", system)]["pesq"] > noisy["pesq"], system
    assert (tmp_path / "runs/demo/report/index.html").is_file()
    # enhance picks the newest run by itself
    noise = next((tmp_path / "runs/demo/noises").glob("*.wav"))
    _cli(["enhance", str(noise), "-o", str(tmp_path / "enhanced.wav")], capsys)
    assert (tmp_path / "enhanced.wav").is_file()


@pytest.mark.slow
def test_folder_recipe_on_real_speech_and_noise(dev_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPEECHKERN_CACHE", str(tmp_path / "cache"))
    settings = [
        f"data.clean_dir={dev_data / 'clean'}", f"data.noise_dir={dev_data / 'noise'}", "data.n_train=40",
        "data.n_val=6", "data.n_test=8", "kernel.gammas=[1.0]", "kernel.autotune_train_frames=1500",
        "kernel.autotune_val_frames=800", "train.max_train_frames=5000", "train.max_val_frames=1500", "dnn.epochs=8",
    ]  # fmt: skip
    argv = ["train", str(RECIPES / "folder"), "--quiet"]
    for item in settings:
        argv += ["--set", item]
    _cli(argv, capsys)
    rows = _rows(_cli(["evaluate", "runs/folder", "--json"], capsys))
    overall = [c for c, s in rows if s == "noisy"]
    condition = "all" if "all" in overall else overall[0]
    assert rows[(condition, "ideal")]["stoi"] > rows[(condition, "noisy")]["stoi"] + 0.05
    for system in ("kernel", "dnn"):
        assert rows[(condition, system)]["si_sdr"] > rows[(condition, "noisy")]["si_sdr"], system
    assert len((tmp_path / "runs/folder/autotune.jsonl").read_text().splitlines()) > 4
