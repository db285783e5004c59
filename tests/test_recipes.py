"""The timit, hint and voicebank recipes end to end on miniature corpora in the real layouts, through the CLI.

Fast tests train the kernel machine and the DNN with tiny settings (a few utterances, small networks, two
epochs); the slow ones keep more of each recipe's own settings (per-condition models for all 15 TIMIT
conditions, autotuning, one- and four-subband kernels). Wrong roots, empty folders and damaged files must each
stop the command with one line on stderr.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_corpora import ROOT_VARIABLES, build_hint, build_noisex, build_timit, build_voicebank

from speechkern import audio
from speechkern.mixtures import read_manifest
from speechkern.recipe import load_recipe
from speechkern_cli.main import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = [
    "data.n_train=6", "data.n_val=2", "data.n_test=2", "data.generated_noise_s=10", "train.max_train_frames=800",
    "train.max_val_frames=400", "train.workers=1", "kernel.epochs=2", "kernel.autotune=false", "dnn.epochs=2",
    "dnn.hidden=[32]", "features.context=1",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _private_cache_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHKERN_CACHE", str(tmp_path / "cache"))
    for name in ROOT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("recipe-corpora")
    return {
        "timit": build_timit(base / "TIMIT"),
        "noisex": build_noisex(base / "NOISEX-92"),
        "hint": build_hint(base / "HINT"),
        "voicebank": build_voicebank(base / "VoiceBank-DEMAND"),
    }


def cli(args: list[str]) -> int:
    """Run ``speechkern ARGS`` in this process; its exit code."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return done.value.code or 0


def train_and_evaluate(recipe: str, run: Path, sets: list[str], capsys, limit: int = 0, models: str = "") -> list:
    args = ["train", RECIPES / recipe, "--out", run, "--device", "cpu", "-q"]
    args += [a for s in sets for a in ("--set", s)] + (["--models", models] if models else [])
    assert cli(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli(["evaluate", run, "--json", "--workers", "1", "--limit", limit]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["rows"]


def row(rows: list[dict], condition: str, system: str) -> dict:
    return next(r for r in rows if r["condition"] == condition and r["system"] == system)


def one_line_error(capsys) -> str:
    """The command's error: exactly one ``error:`` line on stderr (warnings before it are allowed)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def test_recipes_load_with_the_papers_settings():
    timit = load_recipe(RECIPES / "timit")
    assert timit.data.corpus == "timit" and timit.data.n_train == 2000 and timit.data.timit_test == "core"
    assert timit.data.noises == ["ssn", "noisex:babble", "noisex:factory1", "noisex:engine", "noisex:oproom"]
    assert timit.data.snrs == [-5.0, 0.0, 5.0] and timit.features.kind == "complementary"
    assert timit.target.kind == "irm" and timit.kernel.subbands == 4 and timit.train.models == ["kernel", "dnn"]
    hint = load_recipe(RECIPES / "hint")
    assert hint.target.kind == "ibm" and hint.target.lc == "snr-5"
    assert hint.data.conditions == ["ssn@-2", "ssn@-5", "ssn@-8", "babble@0", "babble@-2", "babble@-5"]
    voicebank = load_recipe(RECIPES / "voicebank")
    assert voicebank.data.voicebank_val_speakers == ["p226", "p287"] and voicebank.data.sr == 16000
    for name in ("timit", "hint", "voicebank"):
        readme = (RECIPES / name / "README.md").read_text()
        assert f"speechkern train recipes/{name}" in readme and "GPU" in readme and "CPU" in readme


def test_timit_recipe(corpora, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [*TINY, f"data.timit_root={corpora['timit']}", f"data.noisex_root={corpora['noisex']}", "data.snrs=[0]",
            "train.mode=multi-condition", "kernel.subbands=2"]  # fmt: skip
    rows = train_and_evaluate("timit", run, sets, capsys, limit=5)
    manifests = {s: read_manifest(run / "manifests" / f"{s}.jsonl") for s in ("train", "val", "test")}
    conditions = {"ssn_0dB", "babble_0dB", "factory1_0dB", "engine_0dB", "oproom_0dB"}
    assert {m.condition for m in manifests["train"]} == conditions and len(manifests["train"]) == 30
    assert {m.talker for m in manifests["test"]} <= {"MDAB0", "FPAS0"} and len(manifests["test"]) == 10
    lengths = {m.noise: len(audio.load(m.noise, sr=16000)[0]) for s in manifests.values() for m in s}
    for split, mixtures in manifests.items():  # the noise split: first half for training, second half for testing
        for m in mixtures:
            half = lengths[m.noise] // 2
            expected = (half, lengths[m.noise]) if split == "test" else (0, half)
            assert (m.noise_start, m.noise_stop) == expected and m.noise_start <= m.noise_offset < m.noise_stop
    trained = json.loads((run / "training_time.json").read_text())["rows"]
    assert sorted((r["model"], r["condition"], r["subbands"]) for r in trained) == [
        ("dnn", "all", 1),
        ("kernel", "all", 2),
    ]
    systems = {(r["condition"], r["system"]) for r in rows}
    assert {("all", s) for s in ("noisy", "ideal", "kernel", "dnn")} <= systems
    assert row(rows, "all", "ideal")["stoi"] > row(rows, "all", "noisy")["stoi"]
    assert 0 < row(rows, "all", "kernel")["mse"] < 0.25 and math.isfinite(row(rows, "all", "dnn")["pesq"])
    assert (run / "report" / "index.html").is_file()


def test_hint_recipe(corpora, tmp_path, capsys):
    sets = [*TINY, f"data.hint_root={corpora['hint']}", "data.n_train=0", 'data.conditions=["ssn@-5","babble@0"]',
            "kernel.subbands=1"]  # fmt: skip
    rows = train_and_evaluate("hint", tmp_path / "run", sets, capsys)
    trained = json.loads((tmp_path / "run" / "training_time.json").read_text())["rows"]
    assert sorted((r["model"], r["condition"]) for r in trained) == [
        ("dnn", "babble_0dB"), ("dnn", "ssn_-5dB"), ("kernel", "babble_0dB"), ("kernel", "ssn_-5dB")
    ]  # fmt: skip
    assert len(read_manifest(tmp_path / "run" / "manifests" / "train.jsonl")) == 2 * 8  # n_train=0: the rest
    for condition in ("ssn_-5dB", "babble_0dB"):
        for system in ("kernel", "dnn"):
            r = row(rows, condition, system)
            assert 0 <= r["accuracy"] <= 1 and -1 <= r["hit_fa"] <= 1 and 0 < r["stoi"] <= 1
        assert row(rows, condition, "ideal")["stoi"] > row(rows, condition, "noisy")["stoi"]


def test_voicebank_recipe(corpora, tmp_path, capsys):
    sets = [*TINY, f"data.voicebank_root={corpora['voicebank']}", "data.n_test=0", "kernel.subbands=2"]
    rows = train_and_evaluate("voicebank", tmp_path / "run", sets, capsys)
    test = read_manifest(tmp_path / "run" / "manifests" / "test.jsonl")
    assert all(m.paired and m.sr == 16000 for m in test) and len(test) == 4
    assert {m.condition for m in test} == {"bus_2.5dB", "cafe_7.5dB"}
    for m in test:  # the SNR measured from the recorded pair is near the logged one
        assert abs(m.snr_db - float(m.condition.split("_")[1][:-2])) < 1.5
    val = read_manifest(tmp_path / "run" / "manifests" / "val.jsonl")
    assert {m.talker for m in val} == {"p226", "p287"}
    assert {(r["condition"], r["system"]) for r in rows} >= {("bus_2.5dB", "kernel"), ("cafe_7.5dB", "dnn")}
    assert row(rows, "all", "ideal")["pesq"] > row(rows, "all", "noisy")["pesq"]


# ---------------------------------------------------------------------------------------------------------
# One-line errors


def test_wrong_roots(tmp_path, capsys):
    missing = tmp_path / "no-such-corpus"
    for recipe, key, expected in (
        ("timit", "timit_root", "expected TRAIN/ and TEST/ with DR1..DR8/<speaker>/<utt>.WAV, upper or lower case"),
        ("hint", "hint_root", "expected HINT sentences as audio files"),
        ("voicebank", "voicebank_root", "expected clean_trainset_28spk_wav/, noisy_trainset_28spk_wav/"),
    ):
        code = cli(["train", RECIPES / recipe, "--out", tmp_path / recipe, "--set", f"data.{key}={missing}", "-q"])
        message = one_line_error(capsys)
        assert code == 2 and f"{missing}: no such folder (from data.{key})" in message and expected in message


def test_empty_folders(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for recipe, key, expected in (
        ("timit", "timit_root", f"{empty}: no TIMIT corpus found (expected TRAIN/ and TEST/"),
        ("hint", "hint_root", f"{empty}: no HINT sentences found"),
        ("voicebank", "voicebank_root", f"{empty}: no VoiceBank-DEMAND clean_trainset_28spk_wav/ found"),
    ):
        assert cli(["train", RECIPES / recipe, "--out", tmp_path / recipe, "--set", f"data.{key}={empty}", "-q"]) == 2
        assert expected in one_line_error(capsys)


def test_root_not_given(tmp_path, capsys):
    assert cli(["train", RECIPES / "timit", "--out", tmp_path / "run", "-q"]) == 2
    assert "the TIMIT corpus is not given: add --set data.timit_root=DIR or set TIMIT_ROOT=DIR" in one_line_error(
        capsys
    )


def test_timit_from_environment_without_noisex(corpora, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TIMIT_ROOT", str(corpora["timit"]))
    sets = [a for s in TINY for a in ("--set", s)]
    assert cli(["train", RECIPES / "timit", "--out", tmp_path / "run", "-q", *sets]) == 2
    assert "the NOISEX-92 corpus is not given: add --set data.noisex_root=DIR or set NOISEX_ROOT" in one_line_error(
        capsys
    )


def test_damaged_files(tmp_path, capsys):
    timit_root = build_timit(tmp_path / "TIMIT")
    bad = timit_root / "TRAIN" / "DR1" / "FCJF0" / "SX127.WAV"
    bad.write_bytes(b"NIST_1A\n   1024\nsample_count -i 9\nend_head")
    assert cli(["train", RECIPES / "timit", "--out", tmp_path / "a", "--set", f"data.timit_root={timit_root}"]) == 2
    assert f"{bad}: not readable as audio" in one_line_error(capsys)

    bad.unlink()
    noisex_root = build_noisex(tmp_path / "NOISEX")
    (noisex_root / "FACTORY1.WAV").write_bytes(b"")
    sets = [*TINY, f"data.timit_root={timit_root}", f"data.noisex_root={noisex_root}"]
    assert cli(["train", RECIPES / "timit", "--out", tmp_path / "b", *[a for s in sets for a in ("--set", s)]]) == 2
    assert f"{noisex_root / 'FACTORY1.WAV'}: not readable as audio" in one_line_error(capsys)

    vb = build_voicebank(tmp_path / "VB")
    (vb / "clean_testset_wav" / "p232_002.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    assert cli(["train", RECIPES / "voicebank", "--out", tmp_path / "c", "--set", f"data.voicebank_root={vb}"]) == 2
    assert "p232_002.wav: not readable as audio" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------------------
# Slow: closer to the recipes' own settings


@pytest.mark.slow
def test_timit_recipe_all_conditions(corpora, tmp_path, capsys):
    """The recipe's own mode: one four-subband kernel machine and one DNN per noise and SNR (15 conditions)."""
    sets = [*TINY, f"data.timit_root={corpora['timit']}", f"data.noisex_root={corpora['noisex']}",
            "train.max_train_frames=400"]  # fmt: skip
    rows = train_and_evaluate("timit", tmp_path / "run", sets, capsys)
    trained = json.loads((tmp_path / "run" / "training_time.json").read_text())["rows"]
    conditions = {f"{n}_{s}dB" for n in ("ssn", "babble", "factory1", "engine", "oproom") for s in (-5, 0, 5)}
    assert {r["condition"] for r in trained} == conditions and len(trained) == 2 * 15
    assert {r["subbands"] for r in trained if r["model"] == "kernel"} == {4}
    assert {r["condition"] for r in rows} == conditions | {"all"}
    assert {r["system"] for r in rows} == {"noisy", "ideal", "kernel", "dnn"}


@pytest.mark.slow
def test_timit_recipe_autotune_and_one_subband(corpora, tmp_path, capsys):
    """Algorithm 1 per subband, and the single-kernel model of the paper's subband comparison."""
    sets = [*TINY, f"data.timit_root={corpora['timit']}", f"data.noisex_root={corpora['noisex']}", "data.snrs=[0]",
            'data.noises=["ssn","noisex:engine"]', "kernel.autotune=true", "kernel.autotune_train_frames=300",
            "kernel.autotune_val_frames=200", "kernel.autotune_epochs=1", "kernel.gammas=[1.0]"]  # fmt: skip
    rows = train_and_evaluate("timit", tmp_path / "run", sets, capsys, models="kernel,kernel1")
    trained = json.loads((tmp_path / "run" / "training_time.json").read_text())["rows"]
    assert sorted((r["model"], r["condition"], r["subbands"]) for r in trained) == [
        ("kernel", "engine_0dB", 4), ("kernel", "ssn_0dB", 4), ("kernel1", "engine_0dB", 1), ("kernel1", "ssn_0dB", 1)
    ]  # fmt: skip
    tried = [json.loads(line) for line in (tmp_path / "run" / "autotune.jsonl").read_text().splitlines()]
    bands = [(b, 4) for b in range(4)] + [(0, 1)]
    expected = {(c, b, n) for c in ("engine_0dB", "ssn_0dB") for b, n in bands}
    assert {(t["condition"], t["subband"], t["n_subbands"]) for t in tried} == expected
    assert {r["system"] for r in rows} == {"noisy", "ideal", "kernel", "kernel1"}


@pytest.mark.slow
def test_hint_recipe_all_conditions(corpora, tmp_path, capsys):
    sets = [*TINY, f"data.hint_root={corpora['hint']}", "data.n_train=0"]
    rows = train_and_evaluate("hint", tmp_path / "run", sets, capsys)
    conditions = {"ssn_-2dB", "ssn_-5dB", "ssn_-8dB", "babble_0dB", "babble_-2dB", "babble_-5dB"}
    assert {r["condition"] for r in rows} == conditions | {"all"}
    assert all("accuracy" in r and "hit_fa" in r for r in rows if r["system"] in ("kernel", "dnn"))
