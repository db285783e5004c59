"""The distributed path on a local Ray instance gives the run directory of a sequential run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechkern.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SETTINGS = [
    "data.n_train=4", "data.n_val=2", "data.n_test=1", "data.generated_noise_s=15", "data.max_utterance_s=2.5",
    "features.kind=gf", "features.context=1", "kernel.subbands=2", "kernel.epochs=2", "kernel.autotune=true",
    "kernel.gammas=[1.0, 2.0]", "kernel.autotune_train_frames=300", "kernel.autotune_val_frames=100",
    "kernel.autotune_epochs=1", "dnn.hidden=[16]", "dnn.epochs=2", "train.max_train_frames=500",
    "train.max_val_frames=150", "train.workers=1",
]  # fmt: skip


def _read_autotune(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "autotune.jsonl").read_text().splitlines()]
    return {(r["subband"], r["gamma"], r["grid_index"]): r["val_loss"] for r in rows}


def test_ray_run_matches_sequential_run(tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional 'distributed' extra")
    import torch

    from speechkern.models.io import MaskModel
    from speechkern.parallel import RayExecutor, SerialExecutor
    from speechkern.pipeline import train

    recipe = load_recipe(RECIPES / "demo", SETTINGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray's workers compute with one thread each: same arithmetic, same rounding
    try:
        train(recipe, tmp_path / "serial", cache_dir=tmp_path / "cache", executor=SerialExecutor())
    finally:
        torch.set_num_threads(threads)
    executor = RayExecutor(workers=2)
    try:
        train(recipe, tmp_path / "ray", cache_dir=tmp_path / "cache", executor=executor)
    finally:
        executor.close()

    serial, ray = _read_autotune(tmp_path / "serial"), _read_autotune(tmp_path / "ray")
    assert serial.keys() == ray.keys(), "the searches visited different (γ, σ)"
    for key, loss in serial.items():
        assert ray[key] == pytest.approx(loss, rel=1e-4)
    for name in ("kernel", "dnn"):
        a = MaskModel.load(tmp_path / "serial" / "models" / name)
        b = MaskModel.load(tmp_path / "ray" / "models" / name)
        if name == "kernel":
            assert [(i["gamma"], i["sigma"]) for i in a.info["bands"]] == [
                (i["gamma"], i["sigma"]) for i in b.info["bands"]
            ]
        X = np.random.default_rng(0).standard_normal((50, a.stats.mean.shape[0] * 3)).astype(np.float32)
        np.testing.assert_allclose(a.predict(X), b.predict(X), atol=1e-4)
    for rel in ("recipe.toml", "manifests/train.jsonl", "training_time.json"):
        assert (tmp_path / "ray" / rel).is_file()
    assert (tmp_path / "serial" / "recipe.toml").read_text() == (tmp_path / "ray" / "recipe.toml").read_text()
