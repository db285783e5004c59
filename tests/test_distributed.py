"""The distributed path on a local Ray instance gives the models of a sequential run. One Ray instance (two
workers) serves every test of this module: starting one takes seconds."""

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


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray", reason="Ray is the optional 'distributed' extra")
    from speechkern.eigenpro.local import tree_depth
    from speechkern.parallel import RayExecutor

    executor = RayExecutor(workers=2)
    list(executor.run(tree_depth, [((1, 1), {})] * 2))  # start both workers and import the engine there, once
    yield executor
    executor.close()


def _read_autotune(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "autotune.jsonl").read_text().splitlines()]
    return {(r["subband"], r["gamma"], r["grid_index"]): r["val_loss"] for r in rows}


def test_ray_run_matches_sequential_run(tmp_path, ray_executor, one_thread):
    from speechkern.models.io import MaskModel
    from speechkern.parallel import SerialExecutor
    from speechkern.pipeline import train

    recipe = load_recipe(RECIPES / "demo", SETTINGS)
    train(recipe, tmp_path / "serial", cache_dir=tmp_path / "cache", executor=SerialExecutor())
    train(recipe, tmp_path / "ray", cache_dir=tmp_path / "cache", executor=ray_executor)

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


def _spy_on_tasks(monkeypatch, executor) -> list[str]:
    """The names of the functions ``executor`` runs as tasks, one entry per call."""
    names, run = [], executor.run

    def spy(fn, calls, *args, **kwargs):
        names.extend(fn.__name__ for _ in calls)
        return run(fn, calls, *args, **kwargs)

    monkeypatch.setattr(executor, "run", spy)
    return names


def test_leaves_solved_as_ray_tasks_equal_the_serial_fit(ray_executor, one_thread, monkeypatch):
    import torch

    from speechkern.eigenpro import LocalKernelRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 6)).astype(np.float32)
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2], np.cos(X[:, 3])], 1).astype(np.float32)
    params = {"ridge": 0.01, "leaf_size": 200, "temperature": 0.0, "device": "cpu"}
    serial = LocalKernelRegressor(1.0, 3.0, **params).fit(X, Y)
    tasks = _spy_on_tasks(monkeypatch, ray_executor)
    ray = LocalKernelRegressor(1.0, 3.0, **params).fit(X, Y, executor=ray_executor)
    assert tasks == ["solve_leaf"] * 4 and ray.n_leaves_ == serial.n_leaves_ == 4
    assert ray.get_params() == serial.get_params()  # the executor is not kept: the estimator still pickles
    for name in ("centers_", "leaf_offsets_", "split_directions_", "split_thresholds_"):
        assert torch.equal(getattr(ray, name), getattr(serial, name)), name
    # The same float32 arithmetic on one thread each: equal to rounding (|w| is up to about 10 here).
    torch.testing.assert_close(ray.weights_, serial.weights_, rtol=1e-6, atol=1e-5)
    Xq = rng.normal(size=(200, 6)).astype(np.float32)
    np.testing.assert_allclose(ray.predict(Xq), serial.predict(Xq), rtol=1e-5, atol=1e-6)


def test_ray_run_with_leaves_as_tasks_matches_sequential_run(tmp_path, ray_executor, one_thread, monkeypatch):
    from speechkern.models.io import MaskModel
    from speechkern.parallel import SerialExecutor
    from speechkern.pipeline import train

    settings = [s for s in SETTINGS if not s.startswith("kernel.autotune")]
    recipe = load_recipe(RECIPES / "demo", [*settings, "kernel.autotune=false", "kernel.leaf_size=150"])
    train(recipe, tmp_path / "serial", cache_dir=tmp_path / "cache", executor=SerialExecutor())
    tasks = _spy_on_tasks(monkeypatch, ray_executor)
    train(recipe, tmp_path / "ray", cache_dir=tmp_path / "cache", executor=ray_executor)

    # Two bands of three trees of four leaves (the default: three trees of up to 8 leaves): each band fitted in the
    # driver, its leaves as tasks; the DNN a task beside them.
    assert sorted(tasks) == ["_run_unit"] + ["solve_leaf"] * 24
    rows = {r["model"]: r for r in json.loads((tmp_path / "ray" / "training_time.json").read_text())["rows"]}
    assert (rows["kernel"]["leaves"], rows["kernel"]["trees"], rows["kernel"]["solver"]) == (4, 3, "local")
    a = MaskModel.load(tmp_path / "serial" / "models" / "kernel")
    b = MaskModel.load(tmp_path / "ray" / "models" / "kernel")
    keys = ("band", "gamma", "sigma", "ridge", "epochs")
    assert [[i[k] for k in keys] for i in a.info["bands"]] == [[i[k] for k in keys] for i in b.info["bands"]]
    assert b.info["val_mse"] == pytest.approx(a.info["val_mse"], rel=1e-5)
    X = np.random.default_rng(0).standard_normal((50, a.stats.mean.shape[0] * 3)).astype(np.float32)
    np.testing.assert_allclose(a.predict(X), b.predict(X), atol=1e-5)
    for model in (a, b):
        for est in model.estimators:
            assert est.n_leaves_ == 4


def test_a_task_s_clear_error_reaches_the_caller_as_one_line(ray_executor):
    """A SpeechkernError raised in a task (here a leaf solve refusing its kernel shape) is re-raised as itself:
    the command line prints its one line, not Ray's wrapper with the remote traceback."""
    from speechkern.eigenpro.local import solve_leaf
    from speechkern.errors import SpeechkernError

    X, Y = np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)
    call = ((X, Y, 0, 4), {"shape": 5.0, "bandwidth": 1.0, "ridge": 0.0, "device": "cpu"})
    with pytest.raises(SpeechkernError) as err:
        list(ray_executor.run(solve_leaf, [call]))
    assert type(err.value) is SpeechkernError and str(err.value).startswith("kernel shape γ = 5: expected")
    assert "\n" not in str(err.value)
