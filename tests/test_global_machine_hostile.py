"""The global machine under the local solver's leaves (kernel.global_centers) against bad settings and damaged
model states: one line naming the value, never a traceback, a NumPy error or an allocation beyond the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import RECIPES

from speechkern.eigenpro import LocalKernelRegressor
from speechkern.eigenpro.solver import choose_solver
from speechkern.errors import SpeechkernError

GIB = 2**30


def _fitted(global_centers: int = 40, n: int = 400, seed: int = 0) -> tuple[LocalKernelRegressor, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    Y = np.tanh(X[:, :2]).astype(np.float32)
    est = LocalKernelRegressor(1.0, 3.0, ridge=1e-3, leaf_size=100, temperature=0.0, global_centers=global_centers,
                               device="cpu").fit(X, Y)  # fmt: skip
    return est, X


@pytest.mark.parametrize(
    "value, complaint",
    [(-1, "greater than or equal to 0"), (1.5, "fractional part"), ("x", "unable to parse"),
     (40001, "less than or equal to 40000")],
)  # fmt: skip
def test_a_bad_recipe_value_names_the_key_not_a_pydantic_tag(value, complaint):
    """kernel.global_centers=-1 was refused as 'recipe key "kernel.global_centers.literal['auto']" = -1: Input
    should be 'auto'', naming a key that does not exist and only one of the key's two forms."""
    from speechkern.recipe import load_recipe

    with pytest.raises(SpeechkernError) as err:
        load_recipe(RECIPES / "demo", [f"kernel.global_centers={value}"])
    assert str(err.value).startswith(f"recipe override kernel.global_centers={value}: recipe key "
                                     f"'kernel.global_centers' = {value!r}: input should be 'auto'; or input should "
                                     "be ")  # fmt: skip
    assert complaint in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", [-1, 1.5, "x", True, None, 40_001])
def test_choose_solver_refuses_a_bad_global_centers(value):
    """choose_solver took global_centers=-1 (a 'global machine of -1 centres'), 1.5 and True as 1, and ended
    in a ValueError or TypeError for 'x' and None: library callers got no one-line refusal."""
    with pytest.raises(SpeechkernError, match=rf"^kernel.global_centers={value!r}: expected a whole number of centres"):
        choose_solver(100_000, 100, 10, GIB, global_centers=value)


def test_the_global_machine_keeps_to_the_memory_budget():
    """Neither choose_solver nor the fit weighed the global machine's m × m system (24·m² bytes and more) against
    the budget: 40 000 centres asked for 39 GiB whatever the budget was."""
    with pytest.raises(SpeechkernError, match=r"^kernel.global_centers=40000: the global machine's system needs "
                                              r"39.42 GiB, over the memory budget of 1.00 GiB; choose fewer "
                                              r"centres \(0: none\) or raise kernel.memory_gb$"):  # fmt: skip
        choose_solver(100_000, 100, 10, GIB, global_centers=40_000)
    assert choose_solver(100_000, 100, 10, 16 * GIB).global_centers == 4000  # "auto": 4000 where they fit
    assert choose_solver(100_000, 100, 10, GIB // 4).global_centers == 1873  # else as many as fit
    assert choose_solver(600, 100, 10, GIB, global_centers=40_000).global_centers == 0  # one leaf: none
    X = np.random.default_rng(0).normal(size=(400, 5)).astype(np.float32)
    est = LocalKernelRegressor(leaf_size=100, global_centers=400, memory_budget_gb=0.01, device="cpu")
    with pytest.raises(SpeechkernError, match=r"^global_centers=400: the global machine's system needs 0.04 GiB.* "
                                              r"or raise memory_budget_gb$"):  # fmt: skip
        est.fit(X, X[:, :2])


def test_damaged_global_machine_states_are_refused():
    """A version 2 state holding global tensors loaded them; integer or boolean global centres loaded as numbers;
    params.global_centers of -5 or 'x' loaded, and a resumed run then fitted its other subbands with it."""
    est, X = _fitted()
    tensors, config = est.to_state()
    with pytest.raises(SpeechkernError, match="format version 2 has no global machine, yet it holds global_centers"):
        LocalKernelRegressor.from_state(tensors, {**config, "format_version": 2})
    for dtype in (torch.int64, torch.bool):
        with pytest.raises(SpeechkernError, match=rf"global_centers is {dtype}, expected floating-point values"):
            LocalKernelRegressor.from_state({**tensors, "global_centers": tensors["global_centers"].to(dtype)}, config)
    for bad in (-5, "x"):
        with pytest.raises(SpeechkernError, match=rf"global_centers={bad!r}: expected a whole number of centres"):
            LocalKernelRegressor.from_state(tensors, {**config, "params": {**config["params"], "global_centers": bad}})
    back = LocalKernelRegressor.from_state(tensors, config, device="cpu")
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def test_subbands_with_other_global_machines_predict_each_their_own():
    """The subbands of one model share their leaves; where their global machines differ (a hand-assembled model, or
    one resumed with another setting), each must still be predicted with its own."""
    from speechkern.models.io import _predict_estimators

    with_global, X = _fitted(global_centers=40)
    other, _ = _fitted(global_centers=60)
    none, _ = _fitted(global_centers=0)
    assert torch.equal(with_global.centers_, none.centers_)  # the same tree and leaves
    preds = _predict_estimators([with_global, other, none], X)
    for est, pred in zip((with_global, other, none), preds, strict=True):
        np.testing.assert_allclose(pred, est.predict(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_a_bad_seed_of_the_local_machine_is_one_line(seed):
    """LocalKernelRegressor(seed=-1).fit ended in NumPy's ValueError ('expected non-negative integer') where the
    global machine's centres are drawn; 1.5 in a TypeError."""
    X = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    with pytest.raises(SpeechkernError, match=rf"^seed={seed!r}: expected a whole number ≥ 0$"):
        LocalKernelRegressor(leaf_size=100, global_centers=10, seed=seed, device="cpu").fit(X, X[:, :2])


def test_global_frames_fits_the_global_machine_to_a_draw_of_the_points():
    """global_frames at or above n fits every point (the model of global_frames=0); with global_frames = m the
    draw is the centres themselves, so the global machine nearly interpolates them; the leaves then fit the
    residuals of every point, so the sum still fits the training points."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    Y = np.tanh(X[:, :2]).astype(np.float32)

    def fit(frames: int) -> LocalKernelRegressor:
        return LocalKernelRegressor(1.0, 3.0, ridge=1e-6, leaf_size=100, temperature=0.0, global_centers=40,
                                    global_frames=frames, device="cpu").fit(X, Y)  # fmt: skip

    every = fit(0)
    assert torch.equal(fit(400).global_weights_, every.global_weights_)
    drawn = fit(40)
    assert not torch.equal(drawn.global_centers_, every.global_centers_)
    rows = [int(np.flatnonzero((z == X).all(axis=1))[0]) for z in drawn.global_centers_.numpy()]
    from speechkern.eigenpro.local import predict_global

    at_centres = predict_global([drawn], drawn.global_centers_)[0].numpy()
    np.testing.assert_allclose(at_centres, Y[rows], atol=1e-2)
    np.testing.assert_allclose(drawn.predict(X), Y, atol=2e-2)


@pytest.mark.parametrize("frames", [-1, 1.5, True])
def test_a_bad_global_frames_is_one_line(frames):
    X = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    with pytest.raises(SpeechkernError, match=rf"^global_frames={frames!r}: expected a whole number of points ≥ 0$"):
        LocalKernelRegressor(leaf_size=100, global_centers=10, global_frames=frames, device="cpu").fit(X, X[:, :2])


def test_kernel_global_frames_reaches_the_solver_and_the_estimator():
    """kernel.global_frames (default the engine's) is named in the solver's reason and passed to every band's fit."""
    from types import SimpleNamespace

    from speechkern.eigenpro.local import DEFAULT_GLOBAL_FRAMES
    from speechkern.pipeline import _kernel_params
    from speechkern.recipe import load_recipe

    assert load_recipe(RECIPES / "folder").kernel.global_frames == DEFAULT_GLOBAL_FRAMES
    assert "4000 centres, fitted to 50000 of the frames" in choose_solver(
        348_162, 0, 256, 4 * GIB, global_frames=50_000).reason  # fmt: skip
    assert "4000 centres, fitted to every frame" in choose_solver(348_162, 0, 256, 4 * GIB, global_frames=0).reason
    recipe = load_recipe(RECIPES / "demo", ["kernel.global_frames=1234"])
    unit = SimpleNamespace(solver="local", leaf_size=100, trees=1, global_centers=10, budget_gb=1.0, name="kernel",
                           data=SimpleNamespace(condition="all"))  # fmt: skip
    params = _kernel_params(recipe, unit, 0, "cpu", None)
    assert params["global_frames"] == 1234
    assert LocalKernelRegressor(**{k: v for k, v in params.items() if k != "solver"}).global_frames == 1234
    from speechkern.recipe import inert_settings

    notes = inert_settings(load_recipe(RECIPES / "demo", ["kernel.global_frames=10", "kernel.solver=exact"]))
    assert "kernel.global_frames = 10 has no effect with kernel.solver = 'exact'" in " ".join(notes)
