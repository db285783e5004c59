"""The thesis's chapter-3 asymptotics: Marchenko–Pastur closed forms, the fixed point of eqs 3.21, Lemma 4, the
accuracy of eqs 3.9–3.10, and the finite-size minimiser of eq. 3.7."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import erf
from typer.testing import CliRunner

from speechkern.errors import SpeechkernError
from speechkern.losses import asymptotics as asym
from speechkern.losses.asymptotics_figures import FigureSettings, run_asymptotics
from speechkern.losses.asymptotics_sim import _objective, fit_relu, simulate, teacher_data
from speechkern_cli.losses import app


def mp_expectation(f, beta: float) -> float:
    """E f(S²) for S² the eigenvalues of XXᵀ (n × n, entries N(0, 1/d), β = n/d): the Marchenko–Pastur density
    √((b − x)(x − a))/(2πβx) on [a, b] = [(1 − √β)², (1 + √β)²], plus an atom 1 − 1/β at 0 when β > 1."""
    a, b = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2
    density = lambda x: math.sqrt(max((b - x) * (x - a), 0.0)) / (2 * math.pi * beta * x)  # noqa: E731
    bulk = quad(lambda x: f(x) * density(x), a, b, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return bulk + max(0.0, 1 - 1 / beta) * f(0.0)


@pytest.mark.parametrize("beta", [0.2, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("u", [1e-3, 0.1, 1.0, 10.0])
def test_closed_forms_match_numeric_integration_of_the_marchenko_pastur_law(beta: float, u: float) -> None:
    T, T2, T3, T4 = asym.mp_transforms(u, beta)
    assert mp_expectation(lambda s: 1.0, beta) == pytest.approx(1.0, abs=1e-9)
    assert mp_expectation(lambda s: s, beta) == pytest.approx(1.0, abs=1e-9)  # E S² = 1: entries N(0, 1/d)
    integrals = [
        mp_expectation(f, beta)
        for f in (
            lambda s: u / (s + u),
            lambda s: s / (s + u) ** 2,
            lambda s: u**2 / (s + u) ** 2,
            lambda s: s**2 / (s + u) ** 2,
        )
    ]
    np.testing.assert_allclose([T, T2, T3, T4], integrals, rtol=1e-7, atol=1e-12)
    # the thesis's printed closed form of 𝒯₄ (Lemma 3 and B.2 item 5) lacks a term u/β
    root = math.sqrt((1 - beta + u) ** 2 + 4 * beta * u)
    printed = ((1 + beta) - root) / (2 * beta) - u * (1 + beta + u) / (2 * beta * root)
    assert T4 - printed == pytest.approx(u / beta, rel=1e-9)


def test_closed_forms_match_a_sampled_spectrum_and_the_small_u_limits() -> None:
    rng = np.random.default_rng(0)
    for beta, d in ((0.5, 800), (2.0, 300)):
        X = rng.standard_normal((int(beta * d), d)) / math.sqrt(d)
        s2 = np.linalg.eigvalsh(X @ X.T).clip(min=0)
        u = 0.3
        assert float(asym.mp_transforms(u, beta)[0]) == pytest.approx(np.mean(u / (s2 + u)), abs=0.01)
    # eqs B.4a, B.4e
    for beta in (0.3, 3.0):
        T, _, _, T4 = asym.mp_transforms(1e-10, beta)
        np.testing.assert_allclose([T, T4], [max(0.0, (beta - 1) / beta), min(1.0, 1 / beta)], atol=1e-8)


def _eqs_321(p: asym.Problem, u: float, g: float, kappa2: float, tau2: float) -> list[float]:
    """Eqs 3.21a–e transcribed afresh from the thesis (𝒯₄ = 1 − 𝒯 − u𝒯'), as differences lhs − rhs."""
    b = p.beta
    root = math.sqrt((1 - b + u) ** 2 + 4 * b * u)
    T = (-(1 - b + u) + root) / (2 * b)
    T2 = (-1 + (1 + b + u) / root) / (2 * b)
    T4 = 1 - T - u * T2
    p_star = p.R * (1 - math.sqrt(1 + 1 / g))
    E = erf(-p_star / math.sqrt(2 * (p.sigma_star2 + kappa2)))
    k, R = p.k, p.R
    return [
        g - T * p.lam / u / (1 - T),
        T - (-E + k * (2 * g + 1)) / (2 * k * (1 + g)),
        kappa2 - (tau2 * (T4 - (1 - T) ** 2) + p.sigma2 * u**2 * T2) / T**2,
        tau2
        - (0.5 * kappa2 * (k**2 + k * E - 2 * E) + 2 * (1 + E) ** 2 * R**2 + 2 * (k + E) ** 2 * p.sigma_star2)
        / (2 * k * g + k - E) ** 2,
    ]


@pytest.mark.parametrize(
    "problem",
    [
        asym.Problem(k=10, R=1.0, beta=0.2),
        asym.Problem(k=60, R=8.0, beta=0.5),
        asym.Problem(k=2, R=0.5, beta=2.0),
        asym.Problem(k=10, R=3.0, beta=2.0, lam=1e-3),
        asym.Problem(k=10, R=4.0, beta=0.2, noise_var=0.5),
    ],
)
def test_fixed_point_satisfies_eqs_321_to_a_stated_residual(problem: asym.Problem) -> None:
    fp = asym.solve(problem)
    assert fp.residual < 1e-10
    lhs = (fp.gamma_plus, float(asym.mp_transforms(fp.u, problem.beta)[0]), fp.kappa2, fp.tau2)
    for diff, scale in zip(_eqs_321(problem, fp.u, fp.gamma_plus, fp.kappa2, fp.tau2), lhs, strict=True):
        assert abs(diff) <= 1e-10 * abs(scale)
    assert fp.gamma_minus == pytest.approx(problem.lam / fp.u)
    assert fp.kappa2 > 0 and fp.tau2 > 0 and 0 <= fp.E <= 1


def test_solver_refuses_bad_settings_and_reports_no_solution() -> None:
    with pytest.raises(SpeechkernError, match="lam"):
        asym.solve(asym.Problem(k=3, R=1.0, beta=0.5, lam=0.0))
    with pytest.raises(SpeechkernError, match="beta"):
        asym.solve(asym.Problem(k=3, R=1.0, beta=1.0))
    # measured: at β = 1.2, k = 2 eq. 3.21b has no root
    with pytest.raises(asym.ConvergenceError, match="no root"):
        asym.solve(asym.Problem(k=2, R=1.0, beta=1.2))


@pytest.mark.parametrize("positive", [True, False])
def test_lemma_4_is_the_proximal_argmin(positive: bool) -> None:
    rng = np.random.default_rng(1)
    z = np.linspace(-60, 60, 240_001)
    for _ in range(20):
        R, g, p = rng.uniform(0.5, 5), 10 ** rng.uniform(-2, 1), rng.uniform(-15, 8)
        target = R if positive else 0.0

        def cost(x: np.ndarray, target: float = target, g: float = g, p: float = p) -> np.ndarray:
            return (target - np.maximum(x, 0)) ** 2 + g * (x - p) ** 2

        got = float(asym.proximal_output(np.array(p), R, g, positive))
        assert cost(np.array(got)) <= cost(z).min() + 1e-6


@pytest.mark.parametrize(("k", "R", "gamma", "var"), [(2, 1.0, 0.3, 1.5), (10, 4.0, 0.05, 2.0), (60, 0.5, 2.0, 1.0)])
def test_lemma_2_is_the_mean_derivative_of_lemma_4(k: int, R: float, gamma: float, var: float) -> None:
    """Eq. 3.19: ∂g/∂p averaged over y (1 with probability 1/k) and p ~ N(0, σ*² + κ²), by quadrature of the
    slope of :func:`asymptotics.proximal_output` (almost everywhere: Lemma 2 leaves out the jump of ẑ_c at p*)."""
    p_star = R * (1 - math.sqrt(1 + 1 / gamma))
    E = erf(-p_star / math.sqrt(2 * var))
    formula = -E / (2 * k * (1 + gamma)) + (2 * gamma + 1) / (2 * (1 + gamma))
    x = np.linspace(-12, 12, 400_001) * math.sqrt(var)
    mid = (x[1:] + x[:-1]) / 2
    weight = np.exp(-(mid**2) / (2 * var)) / math.sqrt(2 * math.pi * var) * (x[1] - x[0])
    mean = 0.0
    for y, share in ((True, 1 / k), (False, (k - 1) / k)):
        slope = np.diff(asym.proximal_output(x, R, gamma, y)) / np.diff(x)
        slope[np.abs(slope) > 1.5] = 0.0  # the jump at p* (one interval), measure zero
        mean += share * (weight @ slope)
    assert mean == pytest.approx(formula, abs=2e-4)


def test_accuracy_from_overlaps_at_its_limits() -> None:
    # no overlap: chance; perfect overlap: wrong only when every (ẑ_j)₊ is 0, then a k-way tie
    assert asym.accuracy_from_overlaps(0.0, 1.0, 1.0, 5, 200_000) == pytest.approx(0.2, abs=0.004)
    k = 3
    exact = 1 - 2.0**-k + 2.0**-k / k
    assert asym.accuracy_from_overlaps(2.0, 4.0, 1.0, k, 200_000) == pytest.approx(exact, abs=0.003)


def test_printed_equations_predict_accuracy_falling_with_R() -> None:
    """The shape measured from the chapter's printed equations (docs, section 4), not the chapter's figures."""
    accs = [asym.predicted_accuracy(asym.Problem(k=10, R=R, beta=0.2), 50_000) for R in (0.5, 4.0, 32.0)]
    assert accs[0] > accs[1] > accs[2]
    assert accs[0] == pytest.approx(0.266, abs=0.01)


def test_minimiser_of_eq_37_is_R_equivariant_and_stationary() -> None:
    """‖R·Y − (Xw)₊‖² + (λ/2)‖w‖² = R²·(the same at w/R with R = 1): the minimiser scales with R."""
    rng = np.random.default_rng(2)
    for n, d in ((60, 300), (300, 100)):
        X, labels, _ = teacher_data(n, d, 3, 1.0, 0.0, rng)
        Y = np.eye(3)[labels]
        W1, _, _ = fit_relu(X, Y, 1e-5)
        W7, _, _ = fit_relu(X, 7.0 * Y, 1e-5)
        np.testing.assert_allclose(W7, 7.0 * W1, rtol=1e-5, atol=1e-8 * np.abs(W7).max())
        _, grad = _objective(X, Y, 1e-5, W1)
        assert np.abs(grad).max() < 1e-6
        # no better point nearby: random perturbations do not lower the objective
        base, _ = _objective(X, Y, 1e-5, W1)
        for _ in range(5):
            step = 1e-3 * rng.standard_normal(W1.shape)
            assert _objective(X, Y, 1e-5, W1 + step)[0] >= base - 1e-9


def test_simulated_accuracy_does_not_depend_on_R() -> None:
    results = simulate(asym.Problem(k=4, R=1.0, beta=0.2), (0.5, 2.0, 30.0), n=80, seeds=2, n_test=2000)
    assert len(results) == 6
    for seed in (0, 1):
        accs = {r.accuracy for r in results if r.seed == seed}
        assert len(accs) == 1
    assert all(r.gradient < 1e-8 and r.active_set_converged for r in results)
    assert 0.25 < results[0].accuracy < 1


def test_min_norm_theory_gives_the_exact_minimisers_overlaps() -> None:
    """λ → 0⁺ theory against the minimiser of eq. 3.7 at n = 600, d = 3000 (β = 0.2), k = 4, R = 1: the
    coefficients on the teacher's columns (a own, b others) and ‖w⊥‖²/d, averaged over the columns, within 10 %."""
    problem = asym.Problem(k=4, R=1.0, beta=0.2)
    point = asym.solve_min_norm(problem)
    assert abs(point.residual) < 1e-8
    rng = np.random.default_rng(3)
    X, labels, w_star = teacher_data(600, 3000, 4, 1.0, 0.0, rng)
    W, _, _ = fit_relu(X, np.eye(4)[labels], problem.lam)
    C = np.linalg.lstsq(w_star, W, rcond=None)[0]
    q_perp = np.mean(np.sum((W - w_star @ C) ** 2, axis=0)) / 3000
    off = ~np.eye(4, dtype=bool)
    assert np.mean(np.diag(C)) == pytest.approx(point.a, rel=0.1)
    assert np.mean(C[off]) == pytest.approx(point.b, rel=0.1)
    assert q_perp == pytest.approx(point.q_perp, rel=0.1)


def test_min_norm_theory_refuses_beta_past_the_interpolation_threshold() -> None:
    assert asym.interpolation_threshold(60) == pytest.approx(120 / 61)
    with pytest.raises(SpeechkernError, match="interpolation threshold"):
        asym.solve_min_norm(asym.Problem(k=60, R=1.0, beta=2.0))
    # just below it the fit needs a large orthogonal part; k = 2, β = 1.2 < 4/3 is solvable
    assert asym.solve_min_norm(asym.Problem(k=2, R=1.0, beta=1.2)).q_perp > 0.3


def _small_settings(**kw) -> FigureSettings:
    base = dict(
        R_values=(0.5, 8.0),
        sim_R=(0.5, 8.0),
        fig32_ks=(2, 5),
        fig32_k=5,
        fig32_betas=(0.2, 2.0),
        fig33_k=3,
        fig33_noise=(0.0, 0.5),
        fig35_ks=(2, 4),
        fig35_n_per_class=20,
        fig35_sim_k_max=4,
        sim_n=60,
        seeds=1,
        n_test=500,
        samples=5000,
    )
    return FigureSettings(**(base | kw))


def test_figure_set_writes_figures_tables_and_optimal_R(tmp_path: Path) -> None:
    report = run_asymptotics(tmp_path / "fig", _small_settings())
    names = {p.name for p in report.files}
    assert {"fig3_2.png", "fig3_3.png", "fig3_4.png", "fig3_5.png", "theory.csv", "simulation.csv"} <= names
    assert (tmp_path / "fig" / "fig3_5.png").read_bytes()[:4] == b"\x89PNG"
    # 8 curves (2 per figure) × R ∈ {0.5, 1, 8}, all simulated at R ∈ {0.5, 8}
    assert len(report.theory) == 8 * 3
    assert len(report.optimal) == 8 and all(o["optimal_R"] in (0.5, 1.0, 8.0) for o in report.optimal)
    assert len(report.comparison) == 8 * 2
    lines = (tmp_path / "fig" / "comparison.csv").read_text().splitlines()
    assert lines[0].startswith("figure,curve,R,predicted_accuracy,min_norm_accuracy,simulated_accuracy")
    with pytest.raises(SpeechkernError, match="overwrite=True"):
        run_asymptotics(tmp_path / "fig", _small_settings())


def test_cli_draws_the_theory_and_refuses_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["asymptotics", "--out", str(out), "--no-simulation", "--r-points", "2", "--samples", "2000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Optimal R" in result.output and (out / "optimal_R.csv").exists()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = CliRunner().invoke(app, [*args, "--overwrite", "--lambda", "0"])
    assert bad.exit_code == 2 and "lam=0" in bad.output and "Traceback" not in bad.output
    bad_r = CliRunner().invoke(app, [*args, "--overwrite", "--r-min", "5", "--r-max", "1"])
    assert bad_r.exit_code == 2 and "--r-min" in bad_r.output


# The goal: theory and simulation within 0.03 test accuracy. Measured (docs, sections 5–6): the printed
# equations miss by more, because the minimiser of eq. 3.7 does not depend on R while their prediction does; the
# λ → 0⁺ theory derived here meets it.
GOAL_TOLERANCE = 0.03


@pytest.mark.slow
@pytest.mark.parametrize(
    ("k", "beta", "noise_var"), [(2, 0.2, 0.0), (10, 0.2, 0.0), (10, 0.2, 1.0), (60, 0.8, 0.0), (5, 1.2, 0.0)]
)
def test_min_norm_theory_matches_simulation_within_the_goal(k: int, beta: float, noise_var: float) -> None:
    problem = asym.Problem(k=k, R=1.0, beta=beta, noise_var=noise_var)
    predicted = asym.min_norm_accuracy(asym.solve_min_norm(problem))
    sims = simulate(problem, (1.0, 10.0), n=500, seeds=2, n_test=5000)
    simulated = float(np.mean([s.accuracy for s in sims]))
    assert simulated == pytest.approx(predicted, abs=GOAL_TOLERANCE), (predicted, simulated)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the chapter's equations do not describe the minimiser of eq. 3.7 (docs §5)")
@pytest.mark.parametrize(("k", "beta"), [(2, 0.2), (10, 0.2)])
def test_prediction_matches_simulation_within_the_goal(k: int, beta: float) -> None:
    problem = asym.Problem(k=k, R=1.0, beta=beta)
    R_values = (0.5, 4.0, 32.0)
    sims = simulate(problem, R_values, n=500, seeds=2, n_test=5000)
    for R in R_values:
        simulated = np.mean([s.accuracy for s in sims if s.R == R])
        predicted = asym.predicted_accuracy(asym.Problem(k=k, R=R, beta=beta), 50_000)
        assert simulated == pytest.approx(predicted, abs=GOAL_TOLERANCE), (R, predicted, simulated)


def test_monte_carlo_draws_have_one_check_for_the_library_and_the_command_line(tmp_path: Path) -> None:
    """accuracy_from_overlaps(samples=0) ended in ZeroDivisionError (FigureSettings took it), while the command
    line refused any --samples below 100: one rule, samples ≥ 1, refused in one line by both."""
    from speechkern.errors import SpeechkernError
    from speechkern.losses.asymptotics import accuracy_from_overlaps
    from speechkern.losses.asymptotics_figures import FigureSettings

    for bad in (0, -3, 2.5, True):
        with pytest.raises(SpeechkernError, match=rf"^asymptotics: samples={bad!r} is out of range; give a whole"):
            accuracy_from_overlaps(0.5, 1.0, 1.0, 3, samples=bad)
        with pytest.raises(SpeechkernError, match=rf"samples={bad!r} is out of range"):
            FigureSettings(samples=bad)
    assert 0.0 <= accuracy_from_overlaps(0.5, 1.0, 1.0, 3, samples=50) <= 1.0
    args = ["asymptotics", "--out", str(tmp_path / "o"), "--no-simulation", "--r-points", "2"]
    result = CliRunner().invoke(app, [*args, "--samples", "50"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*args, "--samples", "0", "--overwrite"])
    assert result.exit_code == 2 and "samples=0 is out of range" in result.output
