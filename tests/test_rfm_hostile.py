"""The learned input transform under hostile inputs: degenerate frames and targets, mismatched arrays, and damaged
or foreign files where a run keeps its fitted transform. Every failure is a SpeechkernError naming what to do."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from speechkern import pipeline
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureStats
from speechkern.recipe import Recipe
from speechkern.transform import InputTransform, fit_transform


def _problem(n: int, d: int = 6, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, np.tanh(X[:, :k] * X[:, 1:2]).astype(np.float32) * 0.5 + 0.5


@pytest.mark.parametrize("kind", ["rfm", "pca+rfm"])
def test_all_zero_masks_keep_the_identity_metric(kind):
    """Targets that are all zero give a zero AGOP, hence M = 0: that candidate must be skipped, not crash."""
    X, _ = _problem(120)
    Xv, _ = _problem(30, seed=1)
    tr = fit_transform(kind, X, np.zeros((120, 3), np.float32), Xv, np.zeros((30, 3), np.float32), rfm_frames=120)
    info = tr.info if kind == "rfm" else tr.info["rfm"]
    assert info["kept"] == "identity", info["history"]
    assert np.all(np.isfinite(tr.matrix))
    assert [h["metric"] for h in info["history"]] == ["identity", "diagonal-1", "full-1"]
    assert all(h["val_mse"] is None for h in info["history"][1:]), info["history"]


@pytest.mark.parametrize("kind", ["rfm", "pca+rfm"])
def test_mostly_duplicated_frames_learn_a_metric(kind):
    """With most frames one repeated frame (digital silence), the median distance is 0: σ must still be positive."""
    X, Y = _problem(200)
    X[:170] = X[0]
    Xv, Yv = _problem(40, seed=1)
    tr = fit_transform(kind, X, Y, Xv, Yv, rfm_frames=200)
    info = tr.info if kind == "rfm" else tr.info["rfm"]
    assert np.all(np.isfinite(tr.matrix))
    assert all(h["sigma"] > 0 and np.isfinite(h["val_mse"]) for h in info["history"]), info["history"]


def test_identical_frames_are_refused_clearly():
    X, Y = _problem(60)
    Xv, Yv = _problem(20, seed=1)
    with pytest.raises(SpeechkernError, match=r"all 60 training frames are the same input.*input_transform"):
        fit_transform("rfm", np.ones_like(X), Y, Xv, Yv)


def test_mismatched_arrays_are_refused_clearly():
    X, Y = _problem(60)
    Xv, Yv = _problem(20, seed=1)
    with pytest.raises(SpeechkernError, match=r"validation inputs have 4 columns.*6"):
        fit_transform("rfm", X, Y, Xv[:, :4], Yv)
    with pytest.raises(SpeechkernError, match=r"validation targets.*\(20, 2\).*\(20, 3\)"):
        fit_transform("rfm", X, Y, Xv, Yv[:, :2])
    with pytest.raises(SpeechkernError, match=r"targets.*59 rows.*60"):
        fit_transform("rfm", X, Y[:59], Xv, Yv)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(SpeechkernError, match="not finite"):
        fit_transform("pca", bad)
    with pytest.raises(SpeechkernError, match="1 training frame"):
        fit_transform("pca", X[:1])
    with pytest.raises(SpeechkernError, match=r"kernel.input_dims = 9.*lower it"):
        fit_transform("pca+rfm", X, Y, Xv, Yv, dims=9)


def _write(path, tensors: dict, metadata: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def test_damaged_transform_files_are_refused_naming_the_file(tmp_path):
    config = {"kind": "pca", "in_dim": 3, "out_dim": 3}
    cases = {
        "json": ({"matrix": torch.eye(3)}, {"config": "{not json"}),
        "list": ({"matrix": torch.eye(3)}, {"config": "[1, 2]"}),
        "nokind": ({"matrix": torch.eye(3)}, {"config": json.dumps({"in_dim": 3, "out_dim": 3})}),
        "info": ({"matrix": torch.eye(3)}, {"config": json.dumps({**config, "info": [1]})}),
        "nomatrix": ({"other": torch.eye(3)}, {"config": json.dumps(config)}),
        "shape": ({"matrix": torch.eye(2)}, {"config": json.dumps(config)}),
        "kind": ({"matrix": torch.eye(3)}, {"config": json.dumps({**config, "kind": "none"})}),
    }
    for name, (tensors, metadata) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        _write(path, tensors, metadata)
        with pytest.raises(SpeechkernError, match=f"{name}.safetensors") as err:
            InputTransform.load(path)
        assert "\n" not in str(err.value)
    path = tmp_path / "bf16.safetensors"  # another writer's dtype: read as float32
    _write(path, {"matrix": torch.eye(3, dtype=torch.bfloat16)}, {"config": json.dumps(config)})
    np.testing.assert_array_equal(InputTransform.load(path).matrix, np.eye(3))


def _data(n: int = 200, d: int = 6):
    X, Y = _problem(n, d)
    Xv, Yv = _problem(40, d, seed=1)
    return pipeline.TrainingSet("all", X, Y, Xv, Yv, FeatureStats(np.zeros(d), np.ones(d)))


def _recipe(kind: str = "pca", dims: int = 3, seed: int = 0, **kernel) -> Recipe:
    return Recipe.model_validate({"data": {"seed": seed},
                                  "kernel": {"input_transform": kind, "input_dims": dims, **kernel}})  # fmt: skip


def test_a_foreign_kept_transform_is_fitted_again_when_nothing_depends_on_it(tmp_path, caplog):
    """A file of another kind, input size or fitting settings at the kept transform's path is not used; with no
    finished subbands trained on it, the transform is fitted again (with a warning) and the file replaced."""
    data = _data()
    keep = tmp_path / "models" / ".kernel-transform" / "all.safetensors"
    want = pipeline.kernel_training_set(_recipe("pca", 3), data, keep).transform
    foreign = [
        InputTransform("whiten", np.eye(3, 6), {}),  # another kind
        InputTransform("pca", np.eye(3, 8), {}),  # another input size
        InputTransform("pca", np.eye(2, 6), {}),  # another input_dims
    ]
    other = pipeline.kernel_training_set(_recipe("pca", 3, seed=7), data, tmp_path / "other.safetensors")
    foreign.append(other.transform)  # fitted with another seed
    for tr in foreign:
        tr.save(keep)
        with caplog.at_level(logging.WARNING, logger="speechkern.pipeline"):
            got = pipeline.kernel_training_set(_recipe("pca", 3), data, keep)
        assert "fitting it again" in caplog.text
        caplog.clear()
        np.testing.assert_array_equal(got.transform.matrix, want.matrix)
        np.testing.assert_array_equal(InputTransform.load(keep).matrix, want.matrix)
    keep.write_bytes(b"damaged")
    got = pipeline.kernel_training_set(_recipe("pca", 3), data, keep)
    np.testing.assert_array_equal(got.transform.matrix, want.matrix)


def test_finished_subbands_are_never_paired_with_another_transform(tmp_path):
    """Subband parts finished on the kept transform: a damaged, foreign or missing file cannot be replaced by a
    new fit silently (its inputs could differ from theirs); the error names the file and the parts to delete."""
    data = _data()
    keep = tmp_path / "models" / ".kernel-transform" / "all.safetensors"
    pipeline.kernel_training_set(_recipe("pca", 3), data, keep)
    parts = tmp_path / "models" / ".kernel-parts" / "all"
    parts.mkdir(parents=True)
    (parts / "band-0.json").write_text("{}")
    pipeline.kernel_training_set(_recipe("pca", 3), data, keep)  # the right file: used
    for problem in ("foreign", "damaged", "missing"):
        if problem == "foreign":
            InputTransform("whiten", np.eye(3, 6), {}).save(keep)
        elif problem == "damaged":
            keep.write_bytes(b"damaged")
        else:
            keep.unlink()
        with pytest.raises(SpeechkernError, match=r"all\.safetensors.*\.kernel-parts/all.*--overwrite") as err:
            pipeline.kernel_training_set(_recipe("pca", 3), data, keep)
        assert "\n" not in str(err.value)
        assert (parts / "band-0.json").is_file()  # nothing deleted


def test_an_interrupted_metric_fit_leaves_nothing_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C while the metric is learned: no file is kept, and the next call fits it from the start."""
    from speechkern import transform

    data = _data()
    keep = tmp_path / "models" / ".kernel-transform" / "all.safetensors"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(transform, "_agop", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pipeline.kernel_training_set(_recipe("rfm", 0, rfm_frames=200), data, keep)
    assert not keep.exists() and not list(tmp_path.rglob("*.part"))
    got = pipeline.kernel_training_set(_recipe("rfm", 0, rfm_frames=200), data, keep)
    assert keep.is_file() and got.transform.kind == "rfm"


def test_too_few_frames_name_the_condition_and_the_way_out(tmp_path):
    X, Y = _problem(12)
    data = pipeline.TrainingSet("babble_0", X, Y, X[:4], Y[:4], FeatureStats(np.zeros(6), np.ones(6)))
    with pytest.raises(SpeechkernError, match=r"condition babble_0: .*12 training frames.*need 20.*"
                       r"kernel.input_transform"):  # fmt: skip
        pipeline.kernel_training_set(_recipe("rfm", 0), data, tmp_path / "keep.safetensors")


def test_input_dims_beyond_the_features_are_refused_when_the_recipe_loads():
    """Before any audio is read (feature extraction can take minutes), naming both numbers and the key to change."""
    from conftest import RECIPES

    from speechkern.recipe import load_recipe

    sets = ["features.context=1"]
    with pytest.raises(SpeechkernError, match=r"kernel.input_dims.*5000.*features give 738"):
        load_recipe(RECIPES / "demo", [*sets, "kernel.input_transform=pca+rfm", "kernel.input_dims=5000"])
    load_recipe(RECIPES / "demo", [*sets, "kernel.input_transform=pca+rfm", "kernel.input_dims=738"])
    load_recipe(RECIPES / "demo", [*sets, "kernel.input_dims=5000"])  # no transform: no effect


def test_a_local_machine_refuses_an_executor_that_is_not_one():
    """``fit(executor=...)`` takes a speechkern.parallel executor; anything else is refused before any work."""
    from speechkern.eigenpro import LocalKernelRegressor
    from speechkern.parallel import SerialExecutor

    X, Y = _problem(80)
    est = LocalKernelRegressor(1.0, 3.0, ridge=0.01, leaf_size=40, device="cpu")
    for wrong in ("ray", 2, object()):
        with pytest.raises(SpeechkernError, match=r"executor=.*expected .*SerialExecutor.*RayExecutor"):
            est.fit(X, Y, executor=wrong)
    assert est.fit(X, Y, executor=SerialExecutor()).n_leaves_ == 2


@pytest.mark.parametrize(
    "params, message",
    [({"rfm_agop_frames": 0}, "kernel.rfm_agop_frames = 0"), ({"rfm_agop_frames": -5}, "kernel.rfm_agop_frames = -5"),
     ({"rfm_frames": 0}, "kernel.rfm_frames = 0"), ({"rfm_frames": -1}, "kernel.rfm_frames = -1"),
     ({"rfm_frames": 10}, "kernel.rfm_frames = 10"), ({"rfm_iterations": 0}, "kernel.rfm_iterations = 0"),
     ({"shape": float("nan")}, "kernel.shape = nan"), ({"rfm_agop_frames": 2.5}, "kernel.rfm_agop_frames = 2.5")],
)  # fmt: skip
def test_odd_rfm_settings_from_the_library_are_refused_naming_the_recipe_key(params, message):
    """From the library (the recipe bounds them): 0 AGOP frames raised LinAlgError, negative counts ValueError,
    0 fit frames 'all 0 training frames are the same input', 10 fit frames fitted below the 20 the fit needs,
    0 iterations returned the identity without trying a metric, and a NaN shape blamed the frames."""
    X, Y = _problem(100, d=5)
    Xv, Yv = _problem(30, d=5, seed=1)
    with pytest.raises(SpeechkernError) as err:
        fit_transform("rfm", X, Y, Xv, Yv, **params)
    assert str(err.value).startswith(f"input transform rfm: {message}") and "\n" not in str(err.value), str(err.value)
