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


def _sparse_problem(n: int, seed: int):
    """Targets that depend on 3 of 20 inputs."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 20)).astype(np.float32)
    Y = np.stack([np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2], np.tanh(X[:, 1] - X[:, 2])], axis=1).astype(np.float32)
    return X, Y


def test_rfm_metric_weights_the_coordinates_that_matter():
    X, Y = _sparse_problem(1600, 0)
    Xv, Yv = _sparse_problem(500, 1)
    for diagonal in (False, True):
        tr = fit_transform("rfm", X, Y, Xv, Yv, rfm_frames=1200, rfm_diagonal=diagonal, seed=0)
        assert tr.info["kept"] != "identity", tr.info["history"]
        M = tr.matrix.T @ tr.matrix  # the AGOP's square root (RFM_POWER): its entries' ratios are square-rooted
        weights = np.diag(M)
        assert weights[:3].sum() / weights.sum() > 0.5, (diagonal, np.round(weights, 3))
        assert weights[:3].min() > 3 * weights[3:].max(), (diagonal, np.round(weights, 3))
        scores = {h["metric"]: h["val_mse"] for h in tr.info["history"]}
        assert scores[tr.info["kept"]] == min(scores.values())
        assert scores[tr.info["kept"]] < 0.8 * scores["identity"], scores
        assert set(scores) == ({"identity", "diagonal-1"} if diagonal else {"identity", "diagonal-1", "full-1"})


def test_rfm_agop_frames_reaches_the_fit():
    """``rfm_agop_frames`` sets how many frames' gradients are averaged; fewer still find the metric."""
    X, Y = _sparse_problem(1600, 0)
    Xv, Yv = _sparse_problem(500, 1)
    tr = fit_transform("rfm", X, Y, Xv, Yv, rfm_frames=1200, rfm_agop_frames=300, seed=0)
    assert tr.info["agop_frames"] == 300 and tr.info["frames"] == 1200
    weights = np.diag(tr.matrix.T @ tr.matrix)
    assert weights[:3].min() > 3 * weights[3:].max(), np.round(weights, 3)


def test_rfm_low_rank_keeps_the_relevant_subspace():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1500, 12)).astype(np.float32)
    Y = np.cos(2 * (X[:, :1] + X[:, 1:2])).astype(np.float32)  # depends on x0 + x1 only: a rank-one metric
    tr = fit_transform("rfm", X[:1200], Y[:1200], X[1200:], Y[1200:], dims=1, rfm_frames=1200, seed=0)
    assert tr.info["kept"] == "full-1", tr.info["history"]
    assert tr.matrix.shape == (1, 12)
    direction = tr.matrix[0] / np.linalg.norm(tr.matrix[0])
    assert abs(direction @ np.array([1, 1] + [0] * 10) / np.sqrt(2)) > 0.95


def test_rfm_metric_is_kept_only_where_validation_improves(monkeypatch):
    """A metric that throws away the inputs that matter must lose to M = I, which is then returned."""
    import torch

    from speechkern import transform

    X, Y = _sparse_problem(800, 2)
    Xv, Yv = _sparse_problem(300, 3)
    blind = torch.diag(torch.tensor([0.0] * 3 + [1.0] * 17))
    monkeypatch.setattr(transform, "_root", lambda M, rank, diagonal, power: blind)
    tr = fit_transform("rfm", X, Y, Xv, Yv, rfm_frames=800, seed=0)
    assert tr.info["kept"] == "identity"
    np.testing.assert_array_equal(tr.matrix, np.eye(20, dtype=np.float32))
    with pytest.raises(SpeechkernError, match="validation frames"):
        fit_transform("rfm", X, Y)


def test_agop_leaves_out_each_points_own_term():
    """The AGOP at the training points equals autograd's, each point's gradient taken without its own term
    (the Laplace kernel has no gradient at r = 0)."""
    import torch

    from speechkern.kernels import ExponentialPowerKernel
    from speechkern.transform import _agop

    rng = np.random.default_rng(4)
    U = torch.from_numpy(rng.standard_normal((40, 3))).float()
    alpha = torch.from_numpy(rng.standard_normal((40, 2))).float()
    W = torch.from_numpy(rng.standard_normal((3, 3))).float()
    for shape in (1.0, 0.5, 2.0):
        kernel = ExponentialPowerKernel(shape, 1.7)
        fit = {"U": U, "alpha": alpha, "W": W, "kernel": kernel}
        got = _agop(fit, shape, frames=40, seed=0, block=16)
        want = torch.zeros(3, 3, dtype=torch.float64)
        for s in range(40):
            x = torch.linalg.solve(W.double(), U[s].double()).requires_grad_()  # u = W·x
            others = torch.cat([U[:s], U[s + 1 :]]).double()
            k = torch.exp(-(torch.linalg.norm(W.double() @ x - others, dim=1) ** shape) / 1.7)
            for out in range(2):
                a = torch.cat([alpha[:s, out], alpha[s + 1 :, out]]).double()
                (g,) = torch.autograd.grad(a @ k, x, retain_graph=True)
                want += torch.outer(g, g)
        np.testing.assert_allclose(got.numpy(), (want / 40).numpy(), rtol=2e-3, atol=1e-6)


def test_agop_over_output_directions_is_exact_for_weights_of_that_rank():
    """The AGOP is invariant to an orthonormal change of the output basis, so weights of rank r give the same AGOP
    from their top r singular directions as from every output, and fewer directions give less of it."""
    import torch

    from speechkern.kernels import ExponentialPowerKernel
    from speechkern.transform import _agop

    rng = np.random.default_rng(5)
    U = torch.from_numpy(rng.standard_normal((60, 4))).float()
    alpha = torch.from_numpy(rng.standard_normal((60, 2)) @ rng.standard_normal((2, 6))).float()  # rank 2
    fit = {"U": U, "alpha": alpha, "W": torch.eye(4), "kernel": ExponentialPowerKernel(1.0, 2.0)}
    every = _agop(fit, 1.0, frames=60, seed=0, outputs=0)
    np.testing.assert_allclose(_agop(fit, 1.0, frames=60, seed=0, outputs=2).numpy(), every.numpy(), rtol=1e-4,
                               atol=1e-6 * float(every.abs().max()))  # fmt: skip
    assert float(torch.trace(_agop(fit, 1.0, frames=60, seed=0, outputs=1))) < 0.99 * float(torch.trace(every))


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

    recipe = load_recipe(RECIPES / "demo", [*TINY, "kernel.subbands=1", "kernel.input_transform=pca+rfm",
                                            "kernel.input_dims=12", "kernel.rfm_frames=200"])  # fmt: skip
    train(recipe, tmp_path / "run", cache_dir=tmp_path / "cache", models=["kernel"])
    folder = tmp_path / "run" / "models" / "kernel"
    config = json.loads((folder / "config.json").read_text())
    assert config["transform"]["kind"] == "pca+rfm" and config["transform"]["out_dim"] == 12
    assert config["transform"]["info"]["rfm"]["kept"] in {"identity", "diagonal-1", "full-1"}
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


def test_a_resumed_run_keeps_the_fitted_transform(tmp_path, monkeypatch):
    """The transform is written beside the run's models once fitted and read back, not fitted again: a resumed run's
    remaining subbands see the inputs its finished ones were trained on."""
    from speechkern import pipeline
    from speechkern.features import FeatureStats
    from speechkern.recipe import Recipe

    rng = np.random.default_rng(5)
    X, Xv = rng.standard_normal((300, 6)).astype(np.float32), rng.standard_normal((50, 6)).astype(np.float32)
    data = pipeline.TrainingSet("all", X, X[:, :2], Xv, Xv[:, :2], FeatureStats(np.zeros(6), np.ones(6)))
    recipe = Recipe.model_validate({"kernel": {"input_transform": "pca", "input_dims": 3}})
    keep = tmp_path / "models" / ".kernel-transform" / "all.safetensors"
    first = pipeline.kernel_training_set(recipe, data, keep)
    assert keep.is_file()

    def refit(*args, **kwargs):
        raise AssertionError("the kept transform was fitted again")

    monkeypatch.setattr(pipeline, "fit_transform", refit)
    again = pipeline.kernel_training_set(recipe, data, keep)
    np.testing.assert_array_equal(again.transform.matrix, first.transform.matrix)
    np.testing.assert_array_equal(again.X, first.X)
    assert again.transform.info == first.transform.info
    keep.write_bytes(b"not a safetensors file")  # no subband depends on it yet: fitted again (tests/test_rfm_hostile)
    monkeypatch.undo()
    np.testing.assert_array_equal(pipeline.kernel_training_set(recipe, data, keep).X, first.X)
