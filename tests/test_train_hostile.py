"""Training with the local solver's trees (kernel.trees) on tiny settings, and the model files it writes, damaged."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from conftest import RECIPES, TINY
from conftest import run_cli as _cli
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from speechkern.eigenpro.local import LocalKernelRegressor
from speechkern.errors import SpeechkernError
from speechkern.models.io import MaskModel

TREES = ["kernel.subbands=4", "kernel.solver=local", "kernel.leaf_size=150", "kernel.trees=2", "kernel.autotune=false"]


@pytest.fixture(scope="module")
def trees_run(tmp_path_factory):
    """A tiny demo run whose kernel model is 2 trees of 4 leaves per subband, 4 subbands (a few seconds)."""
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    root = tmp_path_factory.mktemp("trees")
    train(load_recipe(RECIPES / "demo", [*TINY, *TREES]), root / "run", cache_dir=root / "cache", models=["kernel"])
    return root / "run"


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    return LocalKernelRegressor(leaf_size=60, trees=3, device="cpu").fit(X, np.sin(X).sum(1)), X


def _state_edit(fitted, edit):
    est, _ = fitted
    tensors, config = est.to_state()
    tensors, config = {k: v.clone() for k, v in tensors.items()}, copy.deepcopy(config)  # to_state shares storage
    edit(config, tensors)
    return LocalKernelRegressor.from_state(tensors, config, device="cpu")


def _offsets(tensors, values):
    tensors["leaf_offsets"] = values


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c, t: c.__setitem__("n_trees", "x"), "n_trees is 'x', expected a whole number"),  # was ValueError
        (lambda c, t: c.__setitem__("n_trees", None), "n_trees is None"),  # was TypeError
        (lambda c, t: c.__setitem__("n_trees", 3.9), "n_trees is 3.9"),  # was read as 3
        (lambda c, t: c.pop("params"), "params is None, expected an object"),  # was KeyError
        (lambda c, t: c.pop("n_features_in"), "n_features_in is None"),  # was KeyError
        (lambda c, t: c["params"].__setitem__("bogus", 1), "params or kernel cannot be rebuilt"),  # was TypeError
        (lambda c, t: c.__setitem__("format_version", "x"), "format_version is 'x'"),
        (lambda c, t: c.__setitem__("temperature", -1.0), "temperature is -1.0"),  # was accepted
        (lambda c, t: c.__setitem__("temperature", float("nan")), "temperature is nan"),  # was accepted
        (lambda c, t: c.__setitem__("n_outputs", 7), "do not agree"),  # one output in the weights; was accepted
        (lambda c, t: _offsets(t, torch.cat([torch.tensor([5]), t["leaf_offsets"][1:]])), "do not agree"),
        (lambda c, t: _offsets(t, t["leaf_offsets"].double()), "leaf_offsets is torch.float64"),  # was accepted
        (lambda c, t: _offsets(t, t["leaf_offsets"][None]), "do not agree"),  # was ValueError
        (lambda c, t: t.__setitem__("weights", t["weights"][:-1]), "do not agree"),  # was accepted
        (lambda c, t: t.__setitem__("weights", t["weights"] * np.nan), "weights holds NaN"),  # gave NaN predictions
        (lambda c, t: t["split_thresholds"].__setitem__(0, np.inf), "split_thresholds holds NaN"),
    ],
)
def test_local_state_refuses_damage(fitted, edit, match):
    with pytest.raises(SpeechkernError, match=match):
        _state_edit(fitted, edit)


def test_local_state_round_trip(fitted, tmp_path):
    est, X = fitted
    est.save(tmp_path / "m.safetensors")
    again = LocalKernelRegressor.load(tmp_path / "m.safetensors", device="cpu")
    assert again.n_trees_ == 3
    saved, loaded = est.to_state()[0], again.to_state()[0]
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    # The same tensors; the fitted model's predictions come through caches built during the fit, and differed from
    # the reloaded model's by one float32 rounding in some runs.
    np.testing.assert_allclose(again.predict(X[:50]), est.predict(X[:50]), rtol=1e-6, atol=1e-6)


def test_trees_run_has_several_leaves_and_trees(trees_run):
    model = MaskModel.load(trees_run / "models" / "kernel", device="cpu")
    assert len(model.estimators) == 4
    for est in model.estimators:
        assert est.n_trees_ == 2 and est.leaf_offsets_.numel() - 1 == 2 * 4


def _rewrite(folder, edit):
    path = folder / "weights.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _set_offsets(tensors, index, value):
    tensors["est0.leaf_offsets"][index] = value


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t["est1.weights"].__setitem__((0, 0), float("nan")), "est1.weights hold"),  # loaded, NaN masks
        (lambda t: t["est0.centers"].__setitem__((0, 0), float("inf")), "est0.centers hold"),  # loaded
        (lambda t: t["est0.split_thresholds"].__setitem__(0, float("nan")), "est0.split_thresholds hold"),  # rerouted
        (lambda t: _set_offsets(t, 0, 5), "do not agree"),  # 5 centres of a leaf silently dropped
        (lambda t: t.__setitem__("est0.leaf_offsets", t["est0.leaf_offsets"].double()), "leaf_offsets is"),
    ],
)
def test_damaged_trees_model_is_one_line_error(trees_run, tmp_path, capsys, edit, match):
    run = tmp_path / "run"
    shutil.copytree(trees_run, run)
    _rewrite(run / "models" / "kernel", edit)
    with pytest.raises(SpeechkernError, match=match):
        MaskModel.load(run / "models" / "kernel", device="cpu")
    noisy = tmp_path / "noisy.wav"
    import soundfile as sf

    sf.write(noisy, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    code, _, err = _cli(["enhance", str(noisy), "--model", str(run), "-o", str(tmp_path / "out.wav")], capsys)
    assert code != 0 and "Traceback" not in err and err.strip().count("\n") == 0
    assert match.split()[0] in err and not (tmp_path / "out.wav").exists()


def test_more_trees_than_features_is_refused():
    """Tree t cuts along principal direction t; past the last direction every further tree was a copy of the
    last, fitted and stored again."""
    X = np.random.default_rng(0).normal(size=(200, 3))
    with pytest.raises(SpeechkernError, match="trees=4: at most 3"):
        LocalKernelRegressor(leaf_size=60, trees=4, device="cpu").fit(X, X.sum(1))


def test_a_model_named_twice_is_trained_once(tmp_path, monkeypatch, capsys):
    """`speechkern train --models kernel,kernel` (or train.models = ["kernel", "kernel"]) ended in a KeyError
    traceback from the autotune's memo, after the data was prepared."""
    from speechkern import pipeline
    from speechkern.recipe import load_recipe

    seen = []

    def train_locked(recipe, run_dir, names, *args):
        seen.append(names)
        return pipeline.TrainSummary(run_dir, [], [])

    monkeypatch.setattr(pipeline, "_train_locked", train_locked)
    pipeline.train(load_recipe(RECIPES / "demo", TINY), tmp_path / "a", models=["kernel", "dnn", "kernel"])
    pipeline.train(load_recipe(RECIPES / "demo", [*TINY, "train.models=['dnn', 'dnn']"]), tmp_path / "b")
    code, _, err = _cli(["train", str(RECIPES / "demo"), "--models", "kernel,kernel", "--out", str(tmp_path / "c"),
                         "-q", *(f"--set={s}" for s in TINY)], capsys)  # fmt: skip
    assert code == 0, err
    assert seen == [["kernel", "dnn"], ["dnn"], ["kernel"]]


@pytest.mark.parametrize("models", ["", ",", "kernel,", "kernel,,dnn", " "])
def test_an_empty_models_list_is_refused(tmp_path, monkeypatch, capsys, models):
    """`speechkern train --models ''` trained the recipe's models, as if --models were not given, and
    `--models kernel,` stopped with "model '': expected one of ..." naming no flag."""
    from speechkern import pipeline

    monkeypatch.setattr(pipeline, "_train_locked", lambda *a: pytest.fail("trained"))
    code, _, err = _cli(["train", str(RECIPES / "demo"), "--models", models, "--out", str(tmp_path / "r"), "-q",
                         *(f"--set={s}" for s in TINY)], capsys)  # fmt: skip
    assert code == 2
    assert err.startswith(f"error: --models {models!r}: expected a comma-separated list of kernel, kernel1, dnn")
    assert "leave --models out to train the recipe's (kernel, dnn)" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_train_refuses_an_empty_models_list(tmp_path):
    from speechkern import pipeline
    from speechkern.recipe import load_recipe

    with pytest.raises(SpeechkernError, match=r"^models \[\]: an empty list trains nothing; .* or None for the "):
        pipeline.train(load_recipe(RECIPES / "demo", TINY), tmp_path / "a", models=[])
