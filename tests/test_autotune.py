"""Algorithm 1: the points it visits, memoisation, the stopping rule, and resume from the log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechkern.autotune import EvaluationLog, SigmaGrid, autotune, median_distance_power, search


def test_search_follows_algorithm_on_unimodal_function():
    calls: list[int] = []

    def f(x: int) -> float:
        calls.append(x)
        return (x - 37) ** 2

    result = search(f, 0, 90)
    # Level 1: thirds of [0, 90] → 30, 60; argmin σ_m1 = 30 → [σ_l, σ_m2] = [0, 60]. Level 2 reuses 30 and
    # adds 15 (midpoint of the left side, the larger on a tie); argmin 30 = σ_m2 → [σ_m1, σ_h] = [15, 60]; ...
    # worked out by hand down to [36, 38], where the width is 2. Algorithm 1's text returns σ_l = 36; the best
    # point evaluated in that interval, 37 (the optimum), is returned instead.
    assert calls == [0, 30, 60, 90, 15, 45, 22, 38, 34, 42, 36, 35, 37]
    assert result == 37


def test_search_stops_at_width_two_and_returns_the_best_evaluated_point():
    memo: dict[int, float] = {}
    result = search(lambda x: abs(x - 5), 0, 12, memo)
    assert result == 5 and memo[5] == 0.0  # the optimum was evaluated in the final interval: it is returned
    assert set(memo) >= {0, 12}
    assert search(lambda x: pytest.fail("must not evaluate"), 7, 9) == 7  # nothing evaluated: σ_l, as the text


def test_search_returns_the_best_of_the_final_interval_not_its_low_end():
    # Final interval [3, 5] with σ_l = 3 evaluated worse than its neighbour 4.
    memo: dict[int, float] = {}
    values = {0: 9.0, 3: 2.0, 4: 1.0, 5: 1.5, 6: 3.0, 9: 8.0}
    result = search(lambda x: values.get(x, 10.0 + x), 0, 9, memo)
    final = [p for p in memo if 3 <= p <= 5]
    assert result == min(final, key=memo.get)
    assert result == 4 and memo[4] < memo[3]


@pytest.mark.parametrize("optimum", [0, 1, 17, 63, 64])
def test_search_finds_unimodal_minimum_anywhere(optimum: int):
    calls: list[int] = []

    def f(x: int) -> float:
        calls.append(x)
        return abs(x - optimum) + 0.01 * x

    result = search(f, 0, 64)
    assert abs(result - optimum) <= 2
    assert len(calls) == len(set(calls))
    assert len(calls) < 30


def test_autotune_picks_best_gamma_and_never_repeats(tmp_path):
    evaluated: list[tuple[float, float]] = []

    def cv(gamma: float, sigma: float) -> float:
        evaluated.append((gamma, sigma))
        return abs(gamma - 1.0) + abs(sigma - 8.0) / 8.0

    log = EvaluationLog(tmp_path / "autotune.jsonl")
    choice = autotune(cv, [0.5, 1.0, 2.0], lambda g: SigmaGrid.between(1.0, 64.0), log, subband=2)
    assert choice.gamma == 1.0
    assert 8.0 / 2**0.5 <= choice.sigma <= 8.0 * 2**0.5
    assert len(evaluated) == len(set(evaluated))
    lines = (tmp_path / "autotune.jsonl").read_text().splitlines()
    assert len(lines) == len(evaluated)
    assert all('"subband": 2' in line for line in lines)


def test_a_gamma_given_twice_is_searched_once():
    """kernel.gammas = [1, 1.0] ended in a KeyError traceback: two searches shared one key and one stepped on the
    other's memo."""
    evaluated: list[tuple[float, float]] = []

    def cv(gamma: float, sigma: float) -> float:
        evaluated.append((gamma, sigma))
        return abs(gamma - 1.0) + abs(sigma - 8.0) / 8.0

    grids = lambda g: SigmaGrid.between(1.0, 64.0)  # noqa: E731
    twice = autotune(cv, [1, 1.0, 0.5, 1.0], grids, EvaluationLog(None))
    n = len(evaluated)
    once = autotune(cv, [1.0, 0.5], grids, EvaluationLog(None))
    assert (twice.gamma, twice.sigma) == (once.gamma, once.sigma) and n == len(evaluated) - n


def test_resume_after_interruption_repeats_no_evaluation(tmp_path):
    path = tmp_path / "autotune.jsonl"
    count = {"n": 0}

    def cv(gamma: float, sigma: float) -> float:
        count["n"] += 1
        if count["n"] == 7:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the search
        return (sigma - 20.0) ** 2 + gamma

    grids = lambda g: SigmaGrid.between(1.0, 256.0)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        autotune(cv, [0.5, 1.0], grids, EvaluationLog(path))
    done_before = [(r.gamma, r.grid_index) for r in EvaluationLog(path).rows]
    assert len(done_before) == 6

    again: list[tuple[float, float]] = []

    def cv2(gamma: float, sigma: float) -> float:
        again.append((gamma, sigma))
        return (sigma - 20.0) ** 2 + gamma

    resumed = autotune(cv2, [0.5, 1.0], grids, EvaluationLog(path))
    grid = grids(0.5)
    assert not {(g, grid.sigma(k)) for g, k in done_before} & set(again)
    fresh: list[tuple[float, float]] = []
    reference = autotune(lambda g, s: fresh.append((g, s)) or (s - 20.0) ** 2 + g, [0.5, 1.0], grids,
                         EvaluationLog(None))  # fmt: skip
    assert (resumed.gamma, resumed.sigma) == (reference.gamma, reference.sigma)
    assert len(again) + len(done_before) == len(fresh)


def test_sigma_grid_and_median_distance():
    import numpy as np
    import scipy.spatial

    grid = SigmaGrid.between(2.0, 32.0, steps=4)
    assert grid.sigma(grid.low) == 2.0
    assert grid.sigma(grid.high) == pytest.approx(32.0)
    around = SigmaGrid.around(10.0)
    assert around.sigma(around.low) == pytest.approx(10.0 / 8)
    assert around.sigma(around.high) == pytest.approx(80.0)
    X = np.eye(4) * 3.0  # every pair at distance 3·√2
    assert median_distance_power(X, 1.0) == pytest.approx(3.0 * 2**0.5)
    assert median_distance_power(X, 2.0) == pytest.approx(18.0)
    # mostly digital silence: 90 of 100 frames are one frame; the pairs that differ set the scale, never 0
    frames = np.zeros((100, 3))
    frames[90:] = np.arange(10)[:, None] * [1.0, 0.0, 0.0] + [0.0, 4.0, 0.0]
    distances = scipy.spatial.distance.pdist(frames)
    assert np.median(distances) == 0.0
    assert median_distance_power(frames, 1.0) == pytest.approx(np.median(distances[distances > 0]))
    assert median_distance_power(np.ones((50, 3)), 1.0) == 0.0  # all the same: nothing to scale by


def test_parallel_rounds_visit_the_same_points_as_one_search_at_a_time(tmp_path):
    from speechkern.autotune import TuneJob, autotune_jobs

    def loss(job: TuneJob, gamma: float, sigma: float) -> float:
        return abs(sigma - (10.0 + 7 * job.subband)) / 10 + abs(gamma - 1.0) * (job.subband + 1) / 3

    grids = lambda job, gamma: SigmaGrid.between(1.0, 128.0)  # noqa: E731
    jobs = [TuneJob(b, 3) for b in range(3)]
    rounds: list[int] = []

    def evaluate(requests):
        rounds.append(len(requests))
        for r in requests:
            yield r, loss(r.job, r.gamma, r.sigma), 0.0

    together = autotune_jobs(jobs, [0.5, 1.0, 2.0], grids, evaluate, EvaluationLog(tmp_path / "a.jsonl"))
    assert rounds[0] == 3 * 3 * 4  # every (job, γ) search asks for its four starting points at once
    for job in jobs:
        seen: list[tuple[float, float]] = []

        def cv(gamma: float, sigma: float, job: TuneJob = job, seen: list = seen) -> float:
            seen.append((gamma, sigma))
            return loss(job, gamma, sigma)

        alone = autotune(cv, [0.5, 1.0, 2.0], lambda g: SigmaGrid.between(1.0, 128.0), EvaluationLog(None),
                         job.subband, 3)  # fmt: skip
        assert (together[job].gamma, together[job].sigma) == (alone.gamma, alone.sigma)
        logged = {(e.gamma, e.sigma) for e in together[job].evaluations}
        assert logged == set(seen)


def test_one_exact_solve_scores_every_subband_as_each_alone():
    """validate_kernel with column groups (the subbands of one model) gives each group what a solve of that
    group's columns alone gives: loss, and λ."""
    from speechkern.pipeline import validate_kernel

    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(300, 5)).astype(np.float32), rng.normal(size=(80, 5)).astype(np.float32)
    W = rng.normal(size=(5, 6))
    Y, Yv = np.tanh(X @ W).astype(np.float32), np.tanh(Xv @ W).astype(np.float32)
    params = {"ridges": [1e-4, 1e-2, 1.0], "device": "cpu"}
    groups = [(0, 2), (2, 3), (3, 6)]
    together = validate_kernel(X, Y, Xv, Yv, 1.0, 3.0, params, groups=groups)
    for (lo, hi), (loss, _, ridge) in zip(groups, together, strict=True):
        alone, _, alone_ridge = validate_kernel(X, Y[:, lo:hi], Xv, Yv[:, lo:hi], 1.0, 3.0, params)
        assert loss == pytest.approx(alone, rel=1e-5) and ridge == alone_ridge


def test_the_subbands_of_an_exact_model_share_their_autotune_solves(tmp_path, monkeypatch):
    """The tiny demo's 2-subband kernel (exact solver): one solve per distinct (γ, σ) scores both subbands, so
    there are fewer solves than logged evaluations, and every point logged for one subband is logged for the
    other (each search may use the other's points)."""
    from conftest import RECIPES, TINY

    from speechkern import pipeline
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    calls = []
    real = pipeline.validate_kernel

    def counted(*args, **kwargs):
        calls.append(kwargs.get("groups"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "validate_kernel", counted)
    recipe = load_recipe(RECIPES / "demo", TINY)
    train(recipe, tmp_path / "run", cache_dir=tmp_path / "cache", models=["kernel"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "autotune.jsonl").read_text().splitlines()]
    points = [{(r["gamma"], r["grid_index"]) for r in rows if r["subband"] == b} for b in (0, 1)]
    assert all(groups == [(0, 32), (32, 64)] for groups in calls)
    assert len(calls) == len(points[0] | points[1]) < len(rows) == 2 * len(calls)
