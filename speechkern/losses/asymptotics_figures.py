"""Figures 3.2–3.5 of the thesis's chapter 3 from eqs 3.21 and 3.9–3.10, with finite-size simulated points.

:func:`run_asymptotics` writes the PNG figures and their tables (CSV, JSON); docs/losses-asymptotics.md reads them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from speechkern.errors import SpeechkernError
from speechkern.losses.asymptotics import (
    LAM_MAX,
    R_MAX,
    ConvergenceError,
    Problem,
    accuracy_from_overlaps,
    check_samples,
    interpolation_threshold,
    min_norm_accuracy,
    proximal_output,
    solve,
    solve_min_norm,
)
from speechkern.losses.asymptotics_sim import simulate
from speechkern.outputs import atomic_write, check_out_dir, csv_text, write_text
from speechkern.progress import report


@dataclass(frozen=True)
class FigureSettings:
    """The settings of the figure set. The chapter's where it states them (n = 1500, d = 7500, λ = 10⁻⁵, k = 60 for
    the right of Fig. 3.2, n/k = 50 and β = 0.2 for Fig. 3.5); the values it leaves out (the k of Fig. 3.2 left, the
    β and noise levels, the R grid) are chosen here. Simulations use ``sim_n`` training samples (d = n/β) for
    Figs 3.2–3.3 and n = 50k for Fig. 3.5 up to ``fig35_sim_k_max`` classes, ``seeds`` training sets each."""

    R_values: tuple[float, ...] = tuple(float(x) for x in np.logspace(math.log10(0.25), 2, 14))
    sim_R: tuple[float, ...] = (0.5, 2.0, 8.0, 32.0)
    lam: float = 1e-5
    fig32_ks: tuple[int, ...] = (2, 5, 10, 20, 60)
    fig32_beta: float = 0.2
    fig32_k: int = 60
    fig32_betas: tuple[float, ...] = (0.2, 0.5, 0.8, 1.2, 2.0)
    fig33_k: int = 10
    fig33_beta: float = 0.2
    fig33_noise: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)
    fig34_settings: tuple[tuple[int, float], ...] = ((10, 2.0),)
    fig35_ks: tuple[int, ...] = (2, 5, 10, 20, 40, 60, 100)
    fig35_beta: float = 0.2
    fig35_n_per_class: int = 50
    fig35_sim_k_max: int = 20
    sim_n: int = 500
    seeds: int = 2
    n_test: int = 5000
    samples: int = 50_000
    simulate: bool = True

    def __post_init__(self) -> None:
        # inf passed the Problem's own checks (λ = inf drew an empty log-scaled figure, R = inf broke the JSON)
        for name in ("R_values", "sim_R", "lam"):
            values = np.atleast_1d(np.asarray(getattr(self, name), dtype=float))
            if values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
                value = getattr(self, name)  # a list as the command line takes it: 1,inf (not (1.0, inf))
                shown = ",".join(f"{v:g}" for v in value) if isinstance(value, tuple | list) else repr(value)
                raise SpeechkernError(f"asymptotics: {name}={shown} is out of range; give finite values > 0")
        for name in ("R_values", "sim_R"):
            if max(getattr(self, name)) > R_MAX:
                raise SpeechkernError(f"asymptotics: {name} holds {max(getattr(self, name)):g}, out of range; give "
                                      f"R values ≤ {R_MAX:g} (eqs 3.21 square R)")  # fmt: skip
        if self.lam > LAM_MAX:  # above it no curve has a fixed point the solver can find
            raise SpeechkernError(f"asymptotics: lam={self.lam!r} is out of range; give 0 < lam ≤ {LAM_MAX:g} (the "
                                  "fixed point's u ≈ 2·lam must stay within the solver's range, u ≤ e^10)")  # fmt: skip
        check_samples(self.samples)  # before the theory curves, not at the first of them

    def curves(self) -> list[tuple[str, str, Problem]]:
        """(figure, curve label, problem without R) for every theory curve."""
        out = []
        for k in self.fig32_ks:
            out.append(("3.2 left", f"k = {k}", Problem(k=k, R=1.0, beta=self.fig32_beta, lam=self.lam)))
        for beta in self.fig32_betas:
            out.append(("3.2 right", f"β = {beta:g}", Problem(k=self.fig32_k, R=1.0, beta=beta, lam=self.lam)))
        for noise in self.fig33_noise:
            p = Problem(k=self.fig33_k, R=1.0, beta=self.fig33_beta, lam=self.lam, noise_var=noise)
            out.append(("3.3", f"σ_ε = {noise:g}", p))
        for k in self.fig35_ks:
            out.append(("3.5", f"k = {k}", Problem(k=k, R=1.0, beta=self.fig35_beta, lam=self.lam)))
        return out

    def sim_size(self, figure: str, problem: Problem) -> int | None:
        """Training samples of the simulation of a curve, None where it is not simulated."""
        if not self.simulate:
            return None
        if figure == "3.5":
            return self.fig35_n_per_class * problem.k if problem.k <= self.fig35_sim_k_max else None
        return self.sim_n


@dataclass
class AsymptoticsReport:
    """What :func:`run_asymptotics` computed and wrote: theory rows, simulation rows, the theory–simulation
    comparison, the optimal R per curve, the files and the seconds taken."""

    theory: list[dict[str, Any]]
    simulation: list[dict[str, Any]]
    comparison: list[dict[str, Any]]
    optimal: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _theory_row(figure: str, curve: str, problem: Problem, samples: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "figure": figure,
        "curve": curve,
        "k": problem.k,
        "beta": problem.beta,
        "noise_var": problem.noise_var,
        "R": problem.R,
    }
    try:
        fp = solve(problem)
    except ConvergenceError:
        return row | {"predicted_accuracy": math.nan, "solved": False}
    m, q = fp.overlaps()
    acc = accuracy_from_overlaps(m, q, problem.sigma2, problem.k, samples)
    return row | {
        "predicted_accuracy": acc,
        "solved": True,
        "u": fp.u,
        "gamma_plus": fp.gamma_plus,
        "gamma_minus": fp.gamma_minus,
        "kappa2": fp.kappa2,
        "tau2": fp.tau2,
        "E": fp.E,
        "residual": fp.residual,
        "roots": fp.roots,
    }


def _nan_to_none(value: Any) -> Any:
    """JSON has no NaN: missing values (no fixed point, no simulation) become null."""
    if isinstance(value, dict):
        return {key: _nan_to_none(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _compare(theory: list[dict[str, Any]], simulation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(s["figure"], s["curve"], s["R"]) for s in simulation}, key=str)
    for figure, curve, R in keys:
        sims = [s["accuracy"] for s in simulation if (s["figure"], s["curve"], s["R"]) == (figure, curve, R)]
        pred = next(t for t in theory if (t["figure"], t["curve"], t["R"]) == (figure, curve, R))
        mean = float(np.mean(sims))
        sem = float(np.std(sims, ddof=1) / math.sqrt(len(sims))) if len(sims) > 1 else math.nan
        out.append(
            {
                "figure": figure,
                "curve": curve,
                "R": R,
                "predicted_accuracy": pred["predicted_accuracy"],
                "min_norm_accuracy": pred["min_norm_accuracy"],
                "simulated_accuracy": mean,
                "simulated_sem": sem,
                "difference": pred["predicted_accuracy"] - mean,
                "min_norm_difference": pred["min_norm_accuracy"] - mean,
                "seeds": len(sims),
            }
        )
    return out


def run_asymptotics(out_dir: Any, settings: FigureSettings | None = None, overwrite: bool = False) -> AsymptoticsReport:
    """Draw Figs 3.2 (left: k; right: β), 3.3 (label noise), 3.4 (ẑ against p) and 3.5 (optimal R against k).

    Theory: the λ → 0⁺ minimiser (:func:`solve_min_norm`) per curve where β is below the interpolation
    threshold; eqs 3.21 solved for every curve and R of ``settings.R_values`` (with R = 1 and the simulated R added),
    accuracy by eqs 3.9–3.10; simulation: eq. 3.7 minimised at finite size at ``settings.sim_R``. Files in
    ``out_dir``: fig3_2.png, fig3_3.png, fig3_4.png, fig3_5.png, theory.csv, simulation.csv, comparison.csv,
    optimal_R.csv, results.json. Raises SpeechkernError for bad settings or a non-empty folder without
    ``overwrite``.
    """
    settings = settings or FigureSettings()
    start = time.perf_counter()
    if not settings.R_values or min(settings.R_values) <= 0 or (settings.simulate and not settings.sim_R):
        raise SpeechkernError("asymptotics: give positive R values (and simulation R values when simulating)")
    curves = settings.curves()
    for _, _, p in curves:
        p.validate()
    out = Path(check_out_dir(out_dir, overwrite))
    grid = sorted(set(settings.R_values) | {1.0} | (set(settings.sim_R) if settings.simulate else set()))
    theory: list[dict[str, Any]] = []
    simulation: list[dict[str, Any]] = []
    total = len(curves) * len(grid)
    for figure, curve, problem in curves:
        for R in grid:
            theory.append(_theory_row(figure, curve, replace(problem, R=R), settings.samples))
            report("losses/asymptotics", len(theory), total, "theory", figure=figure, curve=curve, R=R)
    min_norm: dict[tuple[str, str], float] = {}  # the λ → 0⁺ minimiser's accuracy, the same at every R
    for figure, curve, problem in curves:
        if problem.beta < interpolation_threshold(problem.k):
            point = solve_min_norm(problem, settings.samples)
            min_norm[figure, curve] = min_norm_accuracy(point, settings.samples)
    for row in theory:
        row["min_norm_accuracy"] = min_norm.get((row["figure"], row["curve"]), math.nan)
    sim_curves = [(f, c, p, settings.sim_size(f, p)) for f, c, p in curves]
    sim_curves = [s for s in sim_curves if s[3]]
    done: dict[tuple[Problem, int], list[Any]] = {}  # curves shared by two figures are simulated once
    for i, (figure, curve, problem, n) in enumerate(sim_curves):
        if (problem, n) not in done:
            done[problem, n] = simulate(problem, settings.sim_R, n, settings.seeds, settings.n_test)
        for res in done[problem, n]:
            simulation.append({"figure": figure, "curve": curve} | asdict(res) | {"noise_var": problem.noise_var})
        report("losses/asymptotics", i + 1, len(sim_curves), "simulation", figure=figure, curve=curve, n=n)
    comparison = _compare(theory, simulation)
    optimal = []
    for figure, curve, problem in curves:
        mine = [t for t in theory if (t["figure"], t["curve"]) == (figure, curve) and t["solved"]]
        if not mine:
            continue
        best = max(mine, key=lambda t: t["predicted_accuracy"])
        at_one = [t for t in mine if t["R"] == 1.0]
        sims = [s["accuracy"] for s in simulation if (s["figure"], s["curve"]) == (figure, curve)]
        optimal.append(
            {
                "figure": figure,
                "curve": curve,
                "k": problem.k,
                "beta": problem.beta,
                "noise_var": problem.noise_var,
                "optimal_R": best["R"],
                "accuracy_at_optimum": best["predicted_accuracy"],
                "accuracy_at_R1": at_one[0]["predicted_accuracy"] if at_one else math.nan,
                "min_norm_accuracy_all_R": min_norm.get((figure, curve), math.nan),
                "simulated_accuracy_all_R": float(np.mean(sims)) if sims else math.nan,
            }
        )
    figures = {
        "fig3_2.png": _figure_32(theory, simulation, settings),
        "fig3_3.png": _figure_curves(
            theory, simulation, "3.3", f"Fig. 3.3: label noise (k = {settings.fig33_k}, β = {settings.fig33_beta:g})"
        ),
        "fig3_4.png": _figure_34(settings),
        "fig3_5.png": _figure_35(optimal, settings),
    }
    files = [
        atomic_write(out / name, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
        for name, fig in figures.items()
    ]
    seconds = time.perf_counter() - start
    files += [
        write_text(out / "theory.csv", csv_text(theory)),
        write_text(out / "simulation.csv", csv_text(simulation) if simulation else ""),
        write_text(out / "comparison.csv", csv_text(comparison) if comparison else ""),
        write_text(out / "optimal_R.csv", csv_text(optimal)),
        write_text(
            out / "results.json",
            json.dumps(
                _nan_to_none(
                    {
                        "settings": asdict(settings),
                        "seconds": seconds,
                        "theory": theory,
                        "simulation": simulation,
                        "comparison": comparison,
                        "optimal": optimal,
                    }
                ),
                indent=1,
                default=float,
                allow_nan=False,
            )
            + "\n",
        ),
    ]
    return AsymptoticsReport(theory, simulation, comparison, optimal, files, seconds)


def _draw_curves(ax: Any, theory: list[dict[str, Any]], simulation: list[dict[str, Any]], figure: str) -> None:
    labels = list(dict.fromkeys(t["curve"] for t in theory if t["figure"] == figure))
    for i, label in enumerate(labels):
        mine = [t for t in theory if (t["figure"], t["curve"]) == (figure, label)]
        ax.plot([t["R"] for t in mine], [t["predicted_accuracy"] for t in mine], "-", color=f"C{i}", label=label)
        ax.plot([t["R"] for t in mine], [t["min_norm_accuracy"] for t in mine], ":", color=f"C{i}", lw=2)
        sims = [s for s in simulation if (s["figure"], s["curve"]) == (figure, label)]
        Rs = sorted({s["R"] for s in sims})
        means = [np.mean([s["accuracy"] for s in sims if s["R"] == R]) for R in Rs]
        ax.plot(Rs, means, "o", color=f"C{i}", markersize=5, markerfacecolor="none")
    ax.set_xscale("log")
    ax.set_xlabel("R (rescaling of the one-hot targets)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def _figure_32(theory: list[dict[str, Any]], simulation: list[dict[str, Any]], s: FigureSettings) -> Figure:
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    _draw_curves(left, theory, simulation, "3.2 left")
    left.set_title(f"classes k (β = {s.fig32_beta:g}, λ = {s.lam:g})", fontsize="medium")
    _draw_curves(right, theory, simulation, "3.2 right")
    right.set_title(f"β = n/d (k = {s.fig32_k}, λ = {s.lam:g})", fontsize="medium")
    fig.suptitle(
        f"Fig. 3.2: solid: eqs 3.21 + 3.9–3.10 as printed; dotted: the λ → 0⁺ minimiser (derived here); "
        f"circles: eq. 3.7 minimised at n = {s.sim_n}, {s.seeds} seed(s)",
        fontsize=10,
    )
    return fig


def _figure_curves(theory: list[dict[str, Any]], simulation: list[dict[str, Any]], figure: str, title: str) -> Figure:
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    _draw_curves(ax, theory, simulation, figure)
    ax.set_title(title + "\nsolid: eqs 3.21 (printed); dotted: λ → 0⁺ minimiser; circles: simulation", fontsize="small")
    return fig


def _figure_34(s: FigureSettings) -> Figure:
    fig = Figure(figsize=(10, 4.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    p = np.linspace(-6, 6, 601)
    for k, beta in s.fig34_settings:
        for i, R in enumerate((1.0, 3.0, 10.0)):
            try:
                fp = solve(Problem(k=k, R=R, beta=beta, lam=s.lam))
            except ConvergenceError:
                continue
            g = fp.gamma_plus
            left.plot(p, proximal_output(p, R, g, True), color=f"C{i}", label=f"R = {R:g} (γ⁺ = {g:.3g})")
            right.plot(p, proximal_output(p, R, g, False), color=f"C{i}", label=f"R = {R:g}")
        title = f"k = {k}, β = {beta:g}"
    left.set_title(f"ẑ_c (y = 1) against p, eq. 3.22 ({title})", fontsize="medium")
    right.set_title("ẑ (y = 0) against p, eq. 3.23", fontsize="medium")
    for ax in (left, right):
        ax.set_xlabel("p")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Fig. 3.4: the proximal outputs at the fixed point's γ⁺", fontsize=10)
    return fig


def _figure_35(optimal: list[dict[str, Any]], s: FigureSettings) -> Figure:
    mine = [o for o in optimal if o["figure"] == "3.5"]
    fig = Figure(figsize=(10, 4.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    ks = [o["k"] for o in mine]
    if not mine:  # no curve of the figure was solved: log axes of no data cannot be drawn
        for ax in (left, right):
            ax.text(0.5, 0.5, "eqs 3.21 have no solution at these settings", ha="center", va="center")
        fig.suptitle(f"Fig. 3.5: n/k = {s.fig35_n_per_class}, β = {s.fig35_beta:g}, λ = {s.lam:g}", fontsize=10)
        return fig
    left.plot(ks, [o["optimal_R"] for o in mine], "o-")
    left.set_yscale("log")
    left.set_ylim(min(s.R_values) / 1.5, max(s.R_values) * 1.5)
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_ylabel("optimal R on the grid (theory)")
    right.plot(ks, [o["accuracy_at_optimum"] for o in mine], "o-", label="theory, optimal R")
    right.plot(ks, [o["accuracy_at_R1"] for o in mine], "s--", label="theory, R = 1")
    right.plot(ks, [o["min_norm_accuracy_all_R"] for o in mine], "d:", label="λ → 0⁺ minimiser, all R")
    sim = [o for o in mine if not math.isnan(o["simulated_accuracy_all_R"])]
    right.plot([o["k"] for o in sim], [o["simulated_accuracy_all_R"] for o in sim], "^", label="simulation, all R")
    right.set_ylabel("test accuracy")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("classes k")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Fig. 3.5: n/k = {s.fig35_n_per_class}, β = {s.fig35_beta:g}, λ = {s.lam:g}", fontsize=10)
    return fig
