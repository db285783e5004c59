"""The DNN baseline learns a small mapping, keeps its best weights, resumes, and round-trips its state."""

from __future__ import annotations

import numpy as np
import torch

from speechkern.models.dnn import DNNRegressor


def _problem(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    Y = 1 / (1 + np.exp(-np.stack([X[:, 0] * 2 - X[:, 1], np.sin(2 * X[:, 2]) * 3], axis=1)))
    return X, Y.astype(np.float32)


def test_dnn_learns_synthetic_mapping():
    X, Y = _problem(3000)
    Xv, Yv = _problem(500, seed=1)
    model = DNNRegressor(hidden=[64, 64], dropout=0.0, epochs=40, batch_size=128, learning_rate=3e-3, patience=5,
                         device="cpu").fit(X, Y, Xv, Yv)  # fmt: skip
    baseline = float(np.mean((Yv - Y.mean(0)) ** 2))
    mse = float(np.mean((model.predict(Xv) - Yv) ** 2))
    assert mse < 0.1 * baseline
    assert model.best_val_mse_ == min(h["val_mse"] for h in model.history_)
    assert model.predict(Xv).min() >= 0 and model.predict(Xv).max() <= 1


def test_dnn_state_round_trip_and_resume(tmp_path):
    X, Y = _problem(600)
    model = DNNRegressor(hidden=[16], epochs=3, batch_size=64, device="cpu")
    model.fit(X, Y, checkpoint=tmp_path / "ckpt")
    tensors, config = model.to_state()
    again = DNNRegressor.from_state(tensors, config)
    np.testing.assert_allclose(again.predict(X), model.predict(X), atol=1e-6)

    # Resume: a longer run from the checkpoint continues at epoch 4 and does not redo 1-3.
    longer = DNNRegressor(hidden=[16], epochs=5, batch_size=64, device="cpu", patience=10)
    longer.fit(X, Y, checkpoint=tmp_path / "ckpt")
    assert [h["epoch"] for h in longer.history_] == [1, 2, 3, 4, 5]
    assert longer.history_[:3] == model.history_[:3]
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())


def test_adagrad_with_momentum_learns_and_resumes(tmp_path):
    import pytest

    from speechkern.errors import SpeechkernError
    from speechkern.models.dnn import AdaGradMomentum, set_momentum

    X, Y = _problem(1500)
    Xv, Yv = _problem(400, seed=1)
    model = DNNRegressor(hidden=[48, 48], dropout=0.0, epochs=25, batch_size=128, learning_rate=1e-2, patience=5,
                         device="cpu", optimizer="adagrad-momentum").fit(X, Y, Xv, Yv)  # fmt: skip
    baseline = float(np.mean((Yv - Y.mean(0)) ** 2))
    assert float(np.mean((model.predict(Xv) - Yv) ** 2)) < 0.1 * baseline
    again = DNNRegressor.from_state(*model.to_state())
    assert again.optimizer == "adagrad-momentum"

    # The step: v ← μv − lr·g/√(Σg²); on a constant gradient g the first step is −lr·sign(g).
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdaGradMomentum([w], lr=0.1, momentum=0.5)
    w.grad = torch.tensor([4.0, -1.0])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.9]))
    opt.step()  # v = 0.5·(−0.1) − 0.1·g/√(2g²)
    step2 = float(-0.05 - 0.1 / np.sqrt(2))
    torch.testing.assert_close(w.detach(), torch.tensor([0.9 + step2, -1.9 - step2]))
    set_momentum(opt, 6)
    assert opt.param_groups[0]["momentum"] == 0.9

    # Checkpoints carry its state: a resumed run continues where the first stopped.
    short = DNNRegressor(hidden=[16], epochs=2, batch_size=64, device="cpu", optimizer="adagrad-momentum")
    short.fit(X[:600], Y[:600], checkpoint=tmp_path / "ckpt")
    longer = DNNRegressor(hidden=[16], epochs=4, batch_size=64, device="cpu", optimizer="adagrad-momentum",
                          patience=10).fit(X[:600], Y[:600], checkpoint=tmp_path / "ckpt")  # fmt: skip
    assert [h["epoch"] for h in longer.history_] == [1, 2, 3, 4]
    with pytest.raises(SpeechkernError, match="dnn.optimizer"):
        DNNRegressor(optimizer="sgd").fit(X[:100], Y[:100])


def test_a_network_beyond_the_memory_budget_is_refused_before_it_is_built(monkeypatch):
    """DNNRegressor(hidden=[100000, 100000]) allocated its 40 GB of weights (or failed in torch's allocator)."""
    import pytest

    from speechkern import limits
    from speechkern.errors import SpeechkernError

    monkeypatch.setattr(limits, "memory_budget", lambda: 10**5)
    X, Y = np.zeros((20, 10), np.float32), np.zeros((20, 2), np.float32)
    with pytest.raises(SpeechkernError, match=r"^hidden=\[512\]: the network's 6.66e\+03 weights need about 133 kB"):
        DNNRegressor(hidden=[512], epochs=1, device="cpu").fit(X, Y)
