"""The manifest corpus (recipes/general): licence filtering, whole talkers held out, noises from the manifest."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from speechkern import audio
from speechkern.corpora import load_splits
from speechkern.dataset import build_manifests, prepare_noises
from speechkern.errors import SpeechkernError
from speechkern.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FIELDS = ["path", "group", "kind", "sr", "channels", "seconds", "speaker_or_type", "licence", "origin"]


def write_corpus(root: Path) -> Path:
    """10 talkers (one with 6 utterances, the rest with 1 or 2), one share-alike talker, 3 noises (one GPL)."""
    rng = np.random.default_rng(0)
    rows = []

    def add(rel: str, kind: str, label: str, licence: str, seconds: float = 0.5) -> None:
        audio.save(root / rel, (0.05 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        rows.append({"path": rel, "group": rel.split("/")[1], "kind": kind, "sr": 16000, "channels": 1,
                     "seconds": seconds, "speaker_or_type": label, "licence": licence, "origin": "test"})  # fmt: skip

    for i in range(6):
        add(f"clean/big/u{i}.wav", "clean", "big", "CC-BY-3.0")
    for t in range(9):
        for u in range(1 + t % 2):
            add(f"clean/many/{t}-{u}.flac", "clean", f"s{t}", "CC-BY-4.0")
    add("clean/sa/x.wav", "clean", "sa", "CC-BY-SA-3.0")
    add("noise/a/rain.wav", "noise", "rain", "CC0-1.0", 4.0)
    add("noise/a/fan.wav", "noise", "fan", "CC-BY", 4.0)
    add("noise/b/engine.wav", "noise", "engine", "GPL-2.0-or-later", 4.0)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def general(manifest: Path, *overrides: str):
    return load_recipe(RECIPES / "general", [f"data.manifest={manifest}", "data.n_val=2", "data.n_test=3",
                                             "data.generated_noise_s=5", *overrides])  # fmt: skip


def test_talkers_are_held_out_whole_and_excluded_licences_left_out(tmp_path):
    recipe = general(write_corpus(tmp_path))
    splits = load_splits(recipe.data, tmp_path)
    talkers = {s: {u.talker for u in us} for s, us in splits.items()}
    assert not talkers["train"] & talkers["val"] and not talkers["train"] & talkers["test"]
    assert not talkers["val"] & talkers["test"]
    assert len(splits["test"]) == 3 and len(splits["val"]) == 2
    assert "big/big" in talkers["train"]  # 6 utterances never fit a held-out split of 2 or 3
    every = [u.path for us in splits.values() for u in us]
    assert len(every) == 6 + 13 and not any("/sa/" in p for p in every)
    # the same seed gives the same split; another seed another one
    assert load_splits(recipe.data, tmp_path) == splits
    assert load_splits(general(tmp_path / "manifest.csv", "data.seed=3").data, tmp_path) != splits


def test_noises_come_from_the_manifest_without_excluded_licences(tmp_path):
    recipe = general(write_corpus(tmp_path), 'data.noises=["manifest"]')
    noises = prepare_noises(recipe, [], tmp_path / "run")
    assert sorted(noises) == ["fan", "rain"]


def test_each_utterance_gets_distinct_conditions(tmp_path):
    recipe = general(write_corpus(tmp_path), 'data.noises=["manifest"]', "data.conditions_per_utterance=3")
    manifests = build_manifests(recipe, tmp_path / "run")
    by_utterance: dict[str, list] = {}
    for m in manifests["train"]:
        by_utterance.setdefault(m.clean, []).append((m.noise_name, m.snr_db))
    assert all(len(c) == 3 and len(set(c)) == 3 for c in by_utterance.values())
    assert {len({m.clean for m in manifests["test"]})} == {len(manifests["test"])}  # one condition per test file
    assert all(m.noise_start >= m.noise_stop // 2 for m in manifests["test"])  # test: second halves of the noises


def test_bad_manifests_give_clear_errors(tmp_path):
    manifest = write_corpus(tmp_path)
    with pytest.raises(SpeechkernError, match="no such manifest"):
        load_splits(general(tmp_path / "absent.csv").data, tmp_path)
    with pytest.raises(SpeechkernError, match="no clean rows left"):
        load_splits(general(manifest, 'data.exclude_licences=["CC"]').data, tmp_path)
    with pytest.raises(SpeechkernError, match="data.n_test: 0 utterances leave the test split empty"):
        load_splits(general(manifest, "data.n_test=0").data, tmp_path)  # refused at load, before any file is read
    (tmp_path / "clean" / "big" / "u0.wav").unlink()
    with pytest.raises(SpeechkernError, match="u0.wav: listed in .* but not there"):
        load_splits(general(manifest).data, tmp_path)
