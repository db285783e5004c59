"""Input transforms: PCA/whitening, the RFM metric on a problem where few coordinates matter, and the
transform's round trip through the model file into ``enhance``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import RECIPES, TINY

from speechkern import audio
from speechkern.errors import SpeechkernError
from speechkern.transform import InputTransform, fit_transform


def test_rfm_metric_weights_the_coordinates_that_matter():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1600, 20)).astype(np.float32)
    Y = np.stack([np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2], np.tanh(X[:, 1] - X[:, 2])], axis=1).astype(np.float32)
    for diagonal in (False, True):
        tr = fit_transform("rfm", X, Y, rfm_frames=600, rfm_iterations=3, rfm_diagonal=diagonal, seed=0)
        M = tr.matrix.T @ tr.matrix
        weights = np.diag(M)
        assert weights[:3].sum() / weights.sum() > 0.9, (diagonal, np.round(weights, 3))
        assert weights[:3].min() > 5 * weights[3:].max()
        # The learned metric fits better than the first, isotropic, iteration.
        history = [h["probe_mse"] for h in tr.info["history"]]
        assert history[-1] < 0.5 * history[0], history


def test_rfm_low_rank_keeps_the_relevant_subspace():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1200, 12)).astype(np.float32)
    Y = np.cos(X[:, :1] + X[:, 1:2]).astype(np.float32)  # depends on x0 + x1 only: a rank-one metric
    tr = fit_transform("rfm", X, Y, dims=1, rfm_frames=500, rfm_iterations=3, seed=0)
    assert tr.matrix.shape == (1, 12)
    direction = tr.matrix[0] / np.linalg.norm(tr.matrix[0])
    assert abs(direction @ np.array([1, 1] + [0] * 10) / np.sqrt(2)) > 0.95


def test_pca_and_whitening():
    rng = np.random.default_rng(2)
    scales = np.array([5.0, 2.0, 1.0, 0.1])
    X = (rng.standard_normal((4000, 4)) * scales).astype(np.float32)
    pca = fit_transform("pca", X, dims=2)
    assert pca.matrix.shape == (2, 4)
    np.testing.assert_allclose(np.abs(pca.matrix), np.eye(4)[:2], atol=0.05)
    white = fit_transform("whiten", X, dims=3)
    cov = np.cov(white.apply(X).T)
    np.testing.assert_allclose(cov, np.eye(3), atol=0.02)
    assert fit_transform("none", X) is None
    with pytest.raises(SpeechkernError, match="input_dims"):
        fit_transform("pca", X, dims=9)
    with pytest.raises(SpeechkernError, match="expected inputs with 4 columns"):
        pca.apply(X[:, :3])


def test_transform_state_round_trip():
    tr = InputTransform("pca", np.arange(6, dtype=np.float32).reshape(2, 3), {"frames": 5})
    again = InputTransform.from_state(tr.matrix, json.loads(json.dumps(tr.to_config())))
    np.testing.assert_array_equal(again.matrix, tr.matrix)
    with pytest.raises(SpeechkernError, match="damaged"):
        InputTransform.from_state(tr.matrix.T, tr.to_config())


def test_transform_travels_in_the_model_file_and_enhance_applies_it(tiny_run, tmp_path):
    """A rotation Q of the inputs with centres rotated alike leaves every distance, hence every mask, unchanged:
    the rotated model must enhance exactly as the original after a save/load, and differently without Q."""
    import torch

    from speechkern.enhance import enhance_signal
    from speechkern.models.io import MaskModel

    _, root, _ = tiny_run
    original = MaskModel.load(root / "run" / "models" / "kernel")
    rotated = MaskModel.load(root / "run" / "models" / "kernel")
    d = rotated.estimators[0].centers_.shape[1]
    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((d, d)))
    rotated.transform = InputTransform("pca", Q.astype(np.float32), {"note": "test rotation"})
    for est in rotated.estimators:
        est.centers_ = (est.centers_ @ torch.from_numpy(Q.T.astype(np.float32))).contiguous()
    rotated.save(tmp_path / "rotated")
    loaded = MaskModel.load(tmp_path / "rotated")
    assert loaded.transform is not None and loaded.transform.info == {"note": "test rotation"}
    np.testing.assert_allclose(loaded.transform.matrix, Q, atol=1e-6)

    y, _ = audio.load(root / "run" / "noises" / "babble.wav")
    y = y[: 16000 * 2]
    want = enhance_signal(original, y)
    got = enhance_signal(loaded, y)
    assert np.sqrt(np.mean((got - want) ** 2)) < 1e-3 * np.sqrt(np.mean(want**2))
    loaded.transform = None
    unrotated = enhance_signal(loaded, y)
    assert np.sqrt(np.mean((unrotated - want) ** 2)) > 1e-2 * np.sqrt(np.mean(want**2))


@pytest.mark.slow
def test_transform_is_saved_loaded_and_applied_by_enhance(tmp_path):
    from speechkern.enhance import enhance_file, enhance_signal
    from speechkern.models.io import MaskModel
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    recipe = load_recipe(RECIPES / "demo", [*TINY, "kernel.subbands=1", "kernel.input_transform=rfm",
                                            "kernel.input_dims=12", "kernel.rfm_frames=200"])  # fmt: skip
    train(recipe, tmp_path / "run", cache_dir=tmp_path / "cache", models=["kernel"])
    folder = tmp_path / "run" / "models" / "kernel"
    config = json.loads((folder / "config.json").read_text())
    assert config["transform"]["kind"] == "rfm" and config["transform"]["out_dim"] == 12
    model = MaskModel.load(folder)
    assert model.transform is not None and model.transform.out_dim == 12
    assert model.estimators[0].centers_.shape[1] == 12  # the kernel works on the transformed inputs

    y, _ = audio.load(tmp_path / "run" / "noises" / "babble.wav")
    y = y[: 16000 * 2]
    enhance_signal(model, y)  # with its transform the model reads the raw inputs
    # The same model without its transform cannot read the raw inputs: enhance must have applied it.
    stripped = MaskModel.load(folder)
    stripped.transform = None
    with pytest.raises(SpeechkernError, match=r"inputs have \d+ and 12 features"):
        enhance_signal(stripped, y)
    audio.save(tmp_path / "in.wav", y, 16000)
    enhance_file(model, tmp_path / "in.wav", tmp_path / "out.wav")
    out, _ = audio.load(tmp_path / "out.wav")
    y16, _ = audio.load(tmp_path / "in.wav")  # the file holds 16-bit samples: compare on the same input
    np.testing.assert_allclose(out, enhance_signal(model, y16), atol=1e-3)
