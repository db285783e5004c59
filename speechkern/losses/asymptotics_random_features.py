"""A different model than the thesis's (kept for contrast): random ReLU features with a trained read-out.

Not the chapter-3 model (that is :mod:`speechkern.losses.asymptotics`). The model, the limit and the equations are
in docs/losses-asymptotics.md, appendix A; in short: k Gaussian classes
``x = √r·u_c + z`` (``z ~ N(0, I_d)``, orthonormal ``u_c``; the observed label is resampled uniformly with
probability ``label_noise``), a one-hidden-layer ReLU network ``f(x) = vᵀ relu(Fx/√d)/√p + b`` whose first layer
``F`` is random and fixed and whose read-out ``v, b`` minimises ``Σ_i Σ_j ω_ij (f_j(x_i) − M·1[j = c_i])² +
λ‖v‖²`` — the rescaled square loss with weight ``R`` (SPEC.md's ``t``) on the true class — in the limit
``p → ∞`` then ``n, d → ∞`` with ``n/d → β``. :func:`solve` finds the fixed point by damped iteration;
:func:`predicted_accuracy` turns it into the test accuracy; :func:`simulate` trains the same network at finite
size by gradient descent for comparison.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from speechkern.errors import SpeechkernError
from speechkern.losses.square import rescaled_square_loss
from speechkern.outputs import atomic_write, check_out_dir, write_text
from speechkern.progress import report

# The ReLU (arc-cosine) kernel E_w[relu(wᵀx/√d)·relu(wᵀx'/√d)] for ‖x‖² = ‖x'‖² = d at small xᵀx'/d = ρ:
# 1/(2π) + ρ/4 + O(ρ²) off the diagonal, 1/2 on it (Cho & Saul 2009); El Karoui (2010) linearisation.
RELU_KAPPA0 = 1.0 / (2.0 * math.pi)
RELU_KAPPA1 = 0.25
RELU_KAPPA_STAR = 0.5 - RELU_KAPPA0 - RELU_KAPPA1

MODELS = ("relu", "linear")


class ConvergenceError(SpeechkernError):
    """The fixed-point iteration did not converge within its iteration cap."""


@dataclass(frozen=True)
class Problem:
    """One setting of the asymptotic problem.

    k: classes (≥ 2); beta: samples per input dimension n/d (> 0); R: weight of the true-class term of the
    rescaled square loss (> 0; R = 1 is the plain square loss); M: its target value (> 0; the accuracy does
    not depend on it, see the docs); snr: r = ‖μ_c‖², the squared distance of each class mean from the origin
    (≥ 0); label_noise: probability ε that a training label is replaced by a uniformly drawn class (in [0, 1));
    ridge: λ > 0 of the read-out's penalty λ‖v‖²; model: ``"relu"`` (the wide one-hidden-layer ReLU network) or
    ``"linear"`` (a linear read-out of x itself, f = Wᵀx/√d + b).
    """

    k: int
    beta: float
    R: float = 1.0
    M: float = 1.0
    snr: float = 2.0
    label_noise: float = 0.0
    ridge: float = 0.1
    model: str = "relu"

    def validate(self) -> None:
        checks = {
            "k": self.k >= 2,
            "beta": self.beta > 0,
            "R": self.R > 0,
            "M": self.M > 0,
            "snr": self.snr >= 0,
            "label_noise": 0 <= self.label_noise < 1,
            "ridge": self.ridge > 0,
            "model": self.model in MODELS,
        }
        for name, ok in checks.items():
            if not ok:
                raise SpeechkernError(f"asymptotics: {name}={getattr(self, name)!r} is out of range; see the docs")

    def effective(self) -> tuple[float, float, float]:
        """(weight of the true class, weight of a wrong class, ridge) of the equivalent linear problem.

        For the ReLU model the kernel's diagonal excess κ* acts as a per-sample ridge: weight ω becomes
        ``ω·λ/(λ + κ*·ω)``, and the linear part κ1·xᵀx'/d turns λ into ``λ/κ1`` (docs, section 2).
        """
        if self.model == "linear":
            return self.R, 1.0, self.ridge
        lam = self.ridge

        def w(omega: float) -> float:
            return omega * lam / (lam + RELU_KAPPA_STAR * omega)

        return w(self.R), w(1.0), lam / RELU_KAPPA1


@dataclass
class FixedPoint:
    """The state-evolution fixed point of a :class:`Problem` (k × k matrices indexed output × output or
    output × class).

    V: the response (variance) matrix; A: column c is a_c, the projection of the read-out on class mean u_c
    (the outputs' mean at class c is √r·a_c + b); b: the intercepts; Q: the overlap WᵀW/d, the covariance of the
    outputs at a test point; iterations: iterations used; residual: the last relative change.
    """

    problem: Problem
    V: np.ndarray
    A: np.ndarray
    b: np.ndarray
    Q: np.ndarray
    iterations: int
    residual: float

    def output_means(self) -> np.ndarray:
        """(k classes, k outputs): the mean output vector of a test point of each class."""
        return (math.sqrt(self.problem.snr) * self.A + self.b[:, None]).T


def _label_joint(k: int, noise: float) -> np.ndarray:
    """π(c, c̃): probability of true class c and observed class c̃."""
    return ((1.0 - noise) * np.eye(k) + noise / k) / k


def solve(
    problem: Problem, damping: float = 0.7, tol: float = 1e-10, max_iter: int = 20000, min_damping: float = 1e-3
) -> FixedPoint:
    """Solve the state-evolution equations of docs/losses-asymptotics.md (section 3) by damped iteration.

    Each iteration maps the state (V, A, b, Q) to new values by the equations and moves a fraction ``damping``
    of the way there; when the change grows instead of shrinking the damping is halved (down to
    ``min_damping``). Converged when the largest change, relative to the state's scale, is below ``tol``.
    Raises ConvergenceError (a SpeechkernError) after ``max_iter`` iterations or on a non-finite state, and
    SpeechkernError for a problem out of range.
    """
    problem.validate()
    if not 0 < damping <= 1:
        raise SpeechkernError(f"asymptotics: damping={damping} must lie in (0, 1]")
    k, beta, r = problem.k, problem.beta, problem.snr
    w_true, w_wrong, lam = problem.effective()
    pi = _label_joint(k, problem.label_noise)
    pi_obs = pi.sum(axis=0)  # marginal of the observed class: 1/k each
    eye = np.eye(k)
    D_inv = [np.diag(np.where(np.arange(k) == c, 1.0 / w_true, 1.0 / w_wrong)) for c in range(k)]
    T = problem.M * eye  # column c̃: the target vector of observed class c̃

    V = eye / (lam + beta * w_wrong)
    A = np.zeros((k, k))
    b = np.full(k, problem.M / k)
    Q = np.zeros((k, k))
    last = math.inf
    sqrt_r = math.sqrt(r)
    for iteration in range(1, max_iter + 1):
        G = [np.linalg.inv(D_inv[c] + V) for c in range(k)]
        V_hat = beta * sum(pi_obs[c] * G[c] for c in range(k))
        V_new = np.linalg.inv(lam * eye + V_hat)
        # means: for each true class c, (λI + V̂ + rβ Σ_c̃ π(c,c̃) G_c̃) a_c = −√r β Σ_c̃ π(c,c̃) G_c̃ (b − T_c̃)
        A_new = np.empty_like(A)
        for c in range(k):
            Gc = sum(pi[c, ct] * G[ct] for ct in range(k))
            rhs = -sqrt_r * beta * sum(pi[c, ct] * G[ct] @ (b - T[:, ct]) for ct in range(k))
            A_new[:, c] = np.linalg.solve(lam * eye + V_hat + r * beta * Gc, rhs)
        # intercepts: the loss's gradient in b vanishes, Σ π(c,c̃) G_c̃ (√r a_c + b − T_c̃) = 0
        S = sum(pi[c, ct] * G[ct] for c in range(k) for ct in range(k))
        rhs_b = sum(pi[c, ct] * G[ct] @ (T[:, ct] - sqrt_r * A_new[:, c]) for c in range(k) for ct in range(k))
        b_new = np.linalg.solve(S, rhs_b)
        # overlaps: Q = V (Q̂ + r Σ_c m̂_c m̂_cᵀ) V, Q̂ = β Σ π(c,c̃) G_c̃ (Q + Δ Δᵀ) G_c̃, Δ = √r a_c + b − T_c̃
        Q_hat = np.zeros((k, k))
        M_hat = np.zeros((k, k))
        for c in range(k):
            for ct in range(k):
                if pi[c, ct] == 0:
                    continue
                delta = sqrt_r * A_new[:, c] + b_new - T[:, ct]
                g_delta = G[ct] @ delta
                Q_hat += beta * pi[c, ct] * (G[ct] @ Q @ G[ct] + np.outer(g_delta, g_delta))
                M_hat[:, c] -= beta * pi[c, ct] * g_delta
        Q_new = V_new @ (Q_hat + r * M_hat @ M_hat.T) @ V_new
        Q_new = (Q_new + Q_new.T) / 2

        change = max(
            np.abs(V_new - V).max() / max(np.abs(V_new).max(), 1e-300),
            np.abs(A_new - A).max() / max(np.abs(A_new).max(), problem.M * 1e-12),
            np.abs(b_new - b).max() / max(np.abs(b_new).max(), problem.M * 1e-12),
            np.abs(Q_new - Q).max() / max(np.abs(Q_new).max(), problem.M**2 * 1e-12),
        )
        if not all(np.isfinite(x).all() for x in (V_new, A_new, b_new, Q_new)):
            raise ConvergenceError(f"asymptotics: the state became non-finite at iteration {iteration} for {problem}")
        if change > last and damping > min_damping:
            damping = max(damping / 2, min_damping)
        last = change
        V = V + damping * (V_new - V)
        A = A + damping * (A_new - A)
        b = b + damping * (b_new - b)
        Q = Q + damping * (Q_new - Q)
        if change < tol:
            return FixedPoint(problem, V, A, b, Q, iteration, float(change))
    raise ConvergenceError(
        f"asymptotics: no convergence after {max_iter} iterations (last relative change {last:.2e}, damping "
        f"{damping:g}) for {problem}; raise max_iter, lower the damping, or increase the ridge"
    )


def accuracy_from_fixed_point(fp: FixedPoint, samples: int = 200_000, seed: int = 0) -> float:
    """Test accuracy: the probability that the largest of the outputs ``N(√r·a_c + b, Q)`` is the true class c,
    averaged over classes, by Monte Carlo with ``samples`` draws (standard error below √(1/(4·samples)))."""
    k = fp.problem.k
    means = fp.output_means()
    L = np.linalg.cholesky(fp.Q + 1e-12 * max(np.trace(fp.Q) / k, 1e-30) * np.eye(k))
    rng = np.random.default_rng(seed)
    per_class = max(samples // k, 1)
    correct = 0
    for c in range(k):
        outputs = means[c] + rng.standard_normal((per_class, k)) @ L.T
        correct += int(np.sum(outputs.argmax(axis=1) == c))
    return correct / (per_class * k)


def predicted_accuracy(problem: Problem, samples: int = 200_000, **solver: Any) -> float:
    """The test accuracy the fixed point predicts for ``problem`` (see :func:`solve` for ``solver`` options)."""
    return accuracy_from_fixed_point(solve(problem, **solver), samples)


def bayes_accuracy(k: int, snr: float, samples: int = 200_000, seed: int = 0) -> float:
    """Accuracy of the Bayes classifier that knows the class means: P(√r + g_0 > max_{j≥1} g_j), g i.i.d. N(0,1)."""
    g = np.random.default_rng(seed).standard_normal((samples, k))
    g[:, 0] += math.sqrt(snr)
    return float(np.mean(g.argmax(axis=1) == 0))


def accuracy_curve(problem: Problem, R_values: np.ndarray, samples: int = 100_000) -> np.ndarray:
    """Predicted accuracy at each R of ``R_values`` (the other settings from ``problem``), with common random
    numbers so that the curve is smooth."""
    return np.array([predicted_accuracy(replace(problem, R=float(R)), samples) for R in R_values])


# ---------------------------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class SimulationResult:
    """A finite-size run: test accuracy, the training objective reached by gradient descent and its relative gap
    to the exact minimiser (a linear solve), and the sizes used."""

    accuracy: float
    objective: float
    objective_gap: float
    d: int
    n: int
    width: int
    steps: int


def _gaussian_classes(
    n: int, d: int, k: int, snr: float, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = √r·e_c + z (the class means along the first k axes; the law is rotation invariant), true and observed
    labels."""
    true = rng.integers(0, k, size=n)
    x = rng.standard_normal((n, d))
    x[np.arange(n), true] += math.sqrt(snr)
    observed = np.where(rng.random(n) < noise, rng.integers(0, k, size=n), true)
    return x, true, observed


def simulate(
    problem: Problem,
    d: int = 300,
    width: int | None = None,
    steps: int = 3000,
    n_test: int = 20_000,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = 1,
) -> SimulationResult:
    """Train the network of ``problem`` at finite size by gradient descent and measure its test accuracy.

    d: input dimension (n = round(β·d) training samples); width: hidden units p (default 8·max(n, d), wide as the
    theory assumes; ignored for the linear model); steps: full-batch gradient-descent steps with Nesterov
    momentum on the mean rescaled square loss (:func:`speechkern.losses.rescaled_square_loss`, t = R) plus
    λ‖v‖²/(n·k) — the objective of the docs divided by n·k; n_test: clean-label test samples; threads: torch CPU
    threads during the run (1 is fastest at these sizes on a shared machine; None leaves the setting alone).
    """
    problem.validate()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _simulate(problem, d, width, steps, n_test, seed, device)
    finally:
        torch.set_num_threads(previous)


def _simulate(
    problem: Problem, d: int, width: int | None, steps: int, n_test: int, seed: int, device: str
) -> SimulationResult:
    rng = np.random.default_rng(seed)
    n = max(int(round(problem.beta * d)), 2)
    k = problem.k
    x_train, _, y_obs = _gaussian_classes(n, d, k, problem.snr, problem.label_noise, rng)
    x_test, y_test, _ = _gaussian_classes(n_test, d, k, problem.snr, 0.0, rng)
    dtype = torch.float64
    dev = torch.device(device)
    if problem.model == "relu":
        p = width or 8 * max(n, d)
        F = torch.as_tensor(rng.standard_normal((d, p)), dtype=dtype, device=dev)

        def features(x: np.ndarray) -> torch.Tensor:
            return torch.relu(torch.as_tensor(x, dtype=dtype, device=dev) @ F / math.sqrt(d)) / math.sqrt(p)

    else:
        p = d

        def features(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x, dtype=dtype, device=dev) / math.sqrt(d)

    phi = features(x_train)
    centre = phi.mean(dim=0)  # the free intercept absorbs the features' mean: same minimiser, better conditioned
    phi = phi - centre
    y = torch.as_tensor(y_obs, device=dev)
    scale = problem.ridge / (n * k)

    def objective(v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = phi @ v + b
        return rescaled_square_loss(out, y, problem.R, problem.M) + scale * v.square().sum()

    # step 1/L: L bounds the Hessian, (2/(n·k))·(max(R, 1)·‖Φ‖² + λ) per output, plus the intercept
    top = float(torch.linalg.matrix_norm(phi, ord=2)) ** 2 + n
    lipschitz = 2.0 / (n * k) * (max(problem.R, 1.0) * top + problem.ridge)
    v = torch.zeros(p, k, dtype=dtype, device=dev, requires_grad=True)
    b = torch.zeros(k, dtype=dtype, device=dev, requires_grad=True)
    v_prev, b_prev = v.detach().clone(), b.detach().clone()
    for step in range(1, steps + 1):
        momentum = (step - 1) / (step + 2)
        with torch.no_grad():
            v_look = (v + momentum * (v - v_prev)).requires_grad_(True)
            b_look = (b + momentum * (b - b_prev)).requires_grad_(True)
        loss = objective(v_look, b_look)
        gv, gb = torch.autograd.grad(loss, (v_look, b_look))
        with torch.no_grad():
            v_prev, b_prev = v.detach().clone(), b.detach().clone()
            v = (v_look - gv / lipschitz).detach()
            b = (b_look - gb / lipschitz).detach()
    reached = float(objective(v, b))
    best = float(objective(*_exact_minimiser(phi, y, problem, scale)))
    with torch.no_grad():
        outputs = (features(x_test) - centre) @ v + b
    accuracy = float((outputs.argmax(dim=1).cpu().numpy() == y_test).mean())
    return SimulationResult(accuracy, reached, (reached - best) / max(abs(best), 1e-300), d, n, p, steps)


def _exact_minimiser(
    phi: torch.Tensor, y: torch.Tensor, problem: Problem, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimiser of the (per-output decoupled, weighted least-squares) objective, by a linear solve per output."""
    n, p = phi.shape
    k = problem.k
    design = torch.cat([phi, torch.ones(n, 1, dtype=phi.dtype, device=phi.device)], dim=1)
    penalty = torch.full((p + 1,), scale * n * k, dtype=phi.dtype, device=phi.device)
    penalty[-1] = 0.0
    v = torch.empty(p, k, dtype=phi.dtype, device=phi.device)
    b = torch.empty(k, dtype=phi.dtype, device=phi.device)
    for j in range(k):
        positive = y == j
        weight = torch.where(positive, problem.R, 1.0).to(phi.dtype)
        target = torch.where(positive, problem.M, 0.0).to(phi.dtype)
        gram = design.T @ (weight[:, None] * design) + torch.diag(penalty)
        sol = torch.linalg.solve(gram, design.T @ (weight * target))
        v[:, j], b[j] = sol[:-1], sol[-1]
    return v, b


# ---------------------------------------------------------------------------------------------- figures


@dataclass
class AsymptoticsReport:
    """What :func:`run_asymptotics` computed and wrote: one row per (β, k, R) with the predicted accuracy
    (and the simulated one where asked), the optimal R per (β, k) on the grid, and the files."""

    rows: list[dict[str, Any]]
    optimal: list[dict[str, Any]]
    files: list[Any]


def run_asymptotics(
    out_dir: Any,
    ks: tuple[int, ...] = (2, 5, 10, 20),
    betas: tuple[float, ...] = (0.5, 2.0, 8.0),
    R_values: tuple[float, ...] = tuple(float(x) for x in np.logspace(-1, 2, 13)),
    base: Problem | None = None,
    simulate_d: int | None = None,
    simulate_seeds: int = 1,
    samples: int = 50_000,
    overwrite: bool = False,
) -> AsymptoticsReport:
    """Predicted accuracy against R for every k and β, the optimal R against k, as PNG, CSV and JSON in ``out_dir``.

    base: the other settings (snr, ridge, label_noise, M, model; its k, β and R are replaced); simulate_d: also
    train the finite-size network at this input dimension (slow) and plot its accuracy as points.
    Files: ``accuracy_vs_R.png`` (one panel per β, one curve per k, the optimum marked), ``optimal_R.png``,
    ``predictions.csv``, ``results.json``. An optimum is marked unresolved when its curve varies by less than
    three Monte-Carlo standard errors. Raises SpeechkernError for bad settings or a non-empty folder
    without ``overwrite``, ConvergenceError when a fixed point is not found.
    """
    base = base or Problem(k=2, beta=1.0)
    if not ks or not betas or not R_values:
        raise SpeechkernError("asymptotics: give at least one k, one β and one R")
    for k in ks:
        for beta in betas:
            replace(base, k=k, beta=beta).validate()
    if min(R_values) <= 0:
        raise SpeechkernError(f"asymptotics: R values must be positive, got {min(R_values)}")
    out = check_out_dir(out_dir, overwrite)
    R_grid = np.array(sorted(set(R_values)), dtype=np.float64)
    rows: list[dict[str, Any]] = []
    optimal: list[dict[str, Any]] = []
    total = len(ks) * len(betas) * len(R_grid)
    for beta in betas:
        for k in ks:
            problem = replace(base, k=k, beta=beta)
            accuracies = []
            for R in R_grid:
                fp = solve(replace(problem, R=float(R)))
                acc = accuracy_from_fixed_point(fp, samples)
                accuracies.append(acc)
                row: dict[str, Any] = {"beta": beta, "k": k, "R": float(R), "predicted_accuracy": acc}
                row["iterations"] = fp.iterations
                if simulate_d:
                    sims = [simulate(replace(problem, R=float(R)), d=simulate_d, seed=s) for s in range(simulate_seeds)]
                    row["simulated_accuracy"] = float(np.mean([s.accuracy for s in sims]))
                rows.append(row)
                report("losses/asymptotics", len(rows), total, "asymptotics", beta=beta, k=k, R=float(R), acc=acc)
            best = int(np.argmax(accuracies))
            # a curve flatter than the Monte-Carlo resolution has no meaningful optimum
            resolved = max(accuracies) - min(accuracies) > 3 * math.sqrt(0.25 / samples)
            optimal.append(
                {
                    "beta": beta,
                    "k": k,
                    "optimal_R": float(R_grid[best]),
                    "resolved": bool(resolved),
                    "accuracy_at_optimum": accuracies[best],
                    "accuracy_at_R1": float(np.interp(0.0, np.log(R_grid), accuracies)),
                    "bayes_accuracy": bayes_accuracy(k, base.snr, samples),
                }
            )

    fig = Figure(figsize=(4.6 * len(betas), 4.0), layout="constrained")
    axes = fig.subplots(1, len(betas), squeeze=False)[0]
    for ax, beta in zip(axes, betas, strict=True):
        for i, k in enumerate(ks):
            mine = [r for r in rows if r["beta"] == beta and r["k"] == k]
            Rs = [r["R"] for r in mine]
            ax.plot(Rs, [r["predicted_accuracy"] for r in mine], "-", color=f"C{i}", label=f"k = {k}")
            opt = next(o for o in optimal if o["beta"] == beta and o["k"] == k)
            ax.plot([opt["optimal_R"]], [opt["accuracy_at_optimum"]], "*", color=f"C{i}", markersize=10)
            if simulate_d:
                ax.plot(Rs, [r["simulated_accuracy"] for r in mine], "o", color=f"C{i}", markersize=4)
        ax.set_xscale("log")
        ax.set_xlabel("R (weight of the true-class term)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"β = n/d = {beta:g}", fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    note = f"; points: simulation at d = {simulate_d}" if simulate_d else ""
    fig.suptitle(
        f"Predicted accuracy of the rescaled square loss ({base.model} model, r = {base.snr:g}, λ = {base.ridge:g}, "
        f"label noise {base.label_noise:g}); ★ optimum on the grid{note}",
        fontsize=10,
    )
    fig2 = Figure(figsize=(5.0, 4.0), layout="constrained")
    ax = fig2.subplots()
    for i, beta in enumerate(betas):
        mine = [o for o in optimal if o["beta"] == beta]
        ax.plot([o["k"] for o in mine], [o["optimal_R"] for o in mine], "-", color=f"C{i}", label=f"β = {beta:g}")
        for o in mine:
            face = f"C{i}" if o["resolved"] else "none"
            ax.plot([o["k"]], [o["optimal_R"]], "o", color=f"C{i}", markerfacecolor=face)
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.set_yscale("log")
    ax.set_ylim(R_grid[0] / 1.5, R_grid[-1] * 1.5)
    ax.set_xlabel("number of classes k")
    ax.set_ylabel("optimal R on the grid")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig2.suptitle(
        "Optimal R against the number of classes (predicted);\nhollow: curve flat within the Monte-Carlo error",
        fontsize=10,
    )

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out_path = Path(out)
    files = [
        atomic_write(out_path / "accuracy_vs_R.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120)),
        atomic_write(out_path / "optimal_R.png", lambda tmp: fig2.savefig(tmp, format="png", dpi=120)),
        write_text(out_path / "predictions.csv", buffer.getvalue()),
        write_text(
            out_path / "results.json",
            json.dumps({"settings": asdict(base), "rows": rows, "optimal": optimal}, indent=2) + "\n",
        ),
    ]
    return AsymptoticsReport(rows, optimal, files)
