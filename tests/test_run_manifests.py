"""A run's manifests against what the run wrote: a cut or changed manifest is refused, not scored; audio paths are
stored absolute, and a manifest from before (paths relative to where the run was trained) still reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import RECIPES, TINY

from speechkern.dataset import MANIFEST_RECORD, read_run_manifest
from speechkern.errors import SpeechkernError
from speechkern.evaluate import evaluate


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    _, root, _ = tiny_run
    return shutil.copytree(root / "run", tmp_path / "run", ignore=shutil.ignore_patterns("report"))


def test_a_manifest_cut_at_a_line_boundary_is_refused_not_scored(run_copy, tiny_run):
    """evaluate scored a test.jsonl cut after its third row as a test split of three mixtures, without a word."""
    test = run_copy / "manifests" / "test.jsonl"
    whole = test.read_text()
    assert len(whole.splitlines()) == 4
    test.write_text("".join(whole.splitlines(keepends=True)[:3]))
    with pytest.raises(SpeechkernError) as err:
        evaluate(run_copy, workers=1, cache_dir=None, examples=0)
    assert str(err.value) == (f"{test}: holds 3 mixture rows where the run wrote 4, so it was cut or changed since "
                              f"(the run's {MANIFEST_RECORD} records it); delete it to have the manifests rebuilt "
                              "from the recipe")  # fmt: skip
    test.write_text(whole.replace('"snr_db": 0.0', '"snr_db": 5.0', 1))  # as many rows, another mixture
    with pytest.raises(SpeechkernError, match="test.jsonl: holds other bytes than the manifest the run wrote"):
        read_run_manifest(run_copy, "test")
    test.unlink()  # as the message says: rebuilt, the same mixtures (with the copy's audio)
    ev = evaluate(run_copy, workers=1, cache_dir=None, limit=1, examples=0)
    assert test.read_text() == whole.replace(str(tiny_run[1] / "run"), str(run_copy)) and len(ev.files) == 1


def test_a_run_on_relative_corpus_paths_reads_its_audio_from_any_folder(tiny_run, tmp_path, monkeypatch):
    """The manifests held the corpus's paths relative to the folder training ran in: evaluated from another
    folder (or moved), the run found no audio. Paths are absolute now; old manifests are read from the run up."""
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    _, root, _ = tiny_run
    work = tmp_path / "work"
    for i, wav in enumerate(sorted((root / "run" / "sources").rglob("*.wav"))):
        (work / "corpus").mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, work / "corpus" / f"t{i:02d}.wav")
    shutil.copy(root / "run" / "noises" / "ssn.wav", work / "noise.wav")
    monkeypatch.chdir(work)
    recipe = load_recipe(RECIPES / "demo", [*TINY, "data.corpus=folder", "data.clean_dir=corpus",
                                            'data.noises=["noise.wav"]'])  # fmt: skip
    train(recipe, Path("runs") / "rel", cache_dir=None, models=["kernel"])
    run = work / "runs" / "rel"
    rows = [json.loads(line) for line in (run / "manifests" / "test.jsonl").read_text().splitlines()]
    assert all(Path(r["clean"]).is_absolute() and Path(r["noise"]).is_absolute() for r in rows)
    monkeypatch.chdir(tmp_path)
    assert len(evaluate(run, workers=1, cache_dir=None, limit=1, examples=0).files) == 1
    for split in ("train", "val", "test"):  # as the code before wrote them: relative, and no record
        path = run / "manifests" / f"{split}.jsonl"
        old = [{**r, "clean": str(Path(r["clean"]).relative_to(work)), "noise": str(Path(r["noise"]).relative_to(work))}
               for r in map(json.loads, path.read_text().splitlines())]  # fmt: skip
        path.write_text("".join(json.dumps(r) + "\n" for r in old))
    (run / "manifests" / MANIFEST_RECORD).unlink()
    assert read_run_manifest(run, "test")[0].clean == str(work / "corpus" / Path(old[0]["clean"]).name)
    assert len(evaluate(run, workers=1, cache_dir=None, limit=1, examples=0).files) == 1
    # The run's recipe.toml held data.clean_dir and the noise file relative to the folder training ran in, so
    # manifests deleted to be rebuilt were looked for from the working directory. Written absolute now:
    recipe_toml = run / "recipe.toml"
    text = recipe_toml.read_text()
    assert f'clean_dir = "{work / "corpus"}"' in text and f'"{work / "noise.wav"}"' in text
    shutil.rmtree(run / "manifests")
    assert len(evaluate(run, workers=1, cache_dir=None, limit=1, examples=0).files) == 1
    recipe_toml.write_text(text.replace(f"{work}/", ""))  # as runs before wrote it: found from the run up
    shutil.rmtree(run / "manifests")
    assert len(evaluate(run, workers=1, cache_dir=None, limit=1, examples=0).files) == 1
    assert read_run_manifest(run, "test")[0].clean == str(work / "corpus" / Path(old[0]["clean"]).name)
