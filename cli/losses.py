"""``speechkern losses``: the classification-losses benchmark (square, rescaled square, squentropy vs cross-entropy)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table

from speechkern.errors import SpeechkernError
from speechkern.losses import names as loss_names
from speechkern.losses import selection as selection_rules

from .ui import PlainCommand, console, fail, plain_typer, progress_ui, stdout

app = plain_typer(
    help="Square loss, rescaled square loss and squentropy against cross-entropy: accuracy and calibration.",
    no_args_is_help=True,
)


@app.callback()
def _losses() -> None:
    """Square loss, rescaled square loss and squentropy against cross-entropy: accuracy and calibration."""


def _losses_option(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in loss_names.LOSSES]
    if unknown or not names:
        raise SpeechkernError(
            f"--losses {text!r}: unknown loss(es) {', '.join(unknown) or '(none given)'}; give a comma list of "
            f"{', '.join(loss_names.LOSSES)}"
        )
    return names


@app.command(cls=PlainCommand)
def bench(
    out: Path = typer.Option(Path("runs/losses-bench"), "--out", help="Folder for the results, comparison, diagrams."),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Folder (tree) of datasets: <set>.csv (header, numeric features, a 'label' column; optional 'fold' or "
        "'split' column, a <set>_folds.csv fold file, or a <set>_splits.json file of row-index lists for provided "
        "splits that may overlap), or <set>_train.csv + <set>_test.csv. See docs/losses.md.",
    ),
    builtin: bool = typer.Option(
        False, "--builtin", help=f"Also run the built-in sets ({', '.join(loss_names.BUILTIN_DATASETS)})."
    ),
    dataset: list[str] | None = typer.Option(
        None,
        "--dataset",
        help="Run only this dataset (repeatable; a qualified name such as uci/iris, or a built-in) "
        "[default: every set of --data, and the built-in ones with --builtin].",
    ),
    losses: str = typer.Option(",".join(loss_names.LOSSES), "--losses", help="Comma list of losses to compare."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds per split and loss (initial weights, batch order)."),
    epochs: int = typer.Option(loss_names.DEFAULT_EPOCHS, "--epochs", min=1, help="Training epochs per run."),
    width: int = typer.Option(128, "--width", min=1, help="Hidden units per layer."),
    depth: int = typer.Option(2, "--depth", min=0, help="Hidden layers."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Samples per step."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam or sgd."),
    lr: str = typer.Option("2e-3", "--lr", help="Learning rate, or a comma list that validation selects from."),
    momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Weight decay (both optimisers)."),
    val_fraction: float = typer.Option(
        0.2,
        "--val-fraction",
        help="Share of the training part held out for model selection (--selection other than last) when the "
        "data give no validation part (0: none, last epoch).",
    ),
    selection: str = typer.Option(
        loss_names.DEFAULT_SELECTION,
        "--selection",
        help="Which epoch (and learning rate) a run keeps: "
        + "; ".join(f"{rule}: {text}" for rule, text in selection_rules.SELECTION_HELP.items())
        + ". docs/losses.md compares them.",
    ),
    smoothing_window: int = typer.Option(
        loss_names.DEFAULT_SMOOTHING_WINDOW,
        "--smoothing-window",
        min=1,
        help="Epochs averaged by --selection accuracy-smoothed.",
    ),
    test_fraction: float = typer.Option(0.3, "--test-fraction", help="Test share of sets without a provided split."),
    rescaled_t: float = typer.Option(1.0, "--rescaled-t", help="Rescaled square loss: weight t of the true class."),
    rescaled_m: float = typer.Option(10.0, "--rescaled-m", help="Rescaled square loss: target M of the true class."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard the results in a non-empty --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of a table."),
) -> None:
    """Train one small network with each loss per dataset; report test accuracy, ECE and a paired comparison.

    A rerun with the same settings and --out resumes: datasets already finished are not trained again.
    """
    from speechkern.losses import bench as bench_lib  # torch and scikit-learn: not at start-up (--help)

    try:
        config = bench_lib.BenchConfig(
            seeds=seeds,
            epochs=epochs,
            hidden=(width,) * depth,
            batch_size=batch_size,
            optimizer=optimizer,
            learning_rates=_floats(lr, "--lr"),
            momentum=momentum,
            weight_decay=weight_decay,
            val_fraction=val_fraction,
            selection=selection,
            smoothing_window=smoothing_window,
            test_fraction=test_fraction,
            rescaled_t=rescaled_t,
            rescaled_M=rescaled_m,
            device=device,
        )
        with progress_ui(quiet=as_json):
            result = bench_lib.run_benchmark(
                out,
                config,
                data_dir=data,
                datasets=dataset,
                losses=_losses_option(losses),
                builtin=builtin,
                overwrite=overwrite,
            )
    except SpeechkernError as err:
        fail(str(err))
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    cfg = result.config
    table = Table(
        title=f"Test accuracy and ECE (%), mean ± std over splits × {seeds} seed(s)",
        caption=f"rescaled_square: t={cfg.rescaled_t:g}, M={cfg.rescaled_M:g}; ECE of the softmax; "
        "'ECE inv.': square-loss outputs mapped by the inverse minimiser",
    )
    for i, name in enumerate(("dataset", "loss", "accuracy", "ECE", "ECE inv.", "epoch kept")):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for cells in bench_lib.table_rows(result, short_names=True):
        table.add_row(*cells)
    stdout.print(table)
    stdout.print(f"selection {cfg.selection}: {bench_lib.epoch_overview(result.runs)}")
    for c in result.comparisons:
        stdout.print(
            f"{c.loss} vs {c.baseline}, {c.metric}: {c.wins} wins, {c.ties} ties, {c.losses} losses over "
            f"{c.n_datasets} datasets (sign test p = {c.p_value:.3g})"
        )
    if result.resumed:
        console.print(f"resumed {len(result.resumed)} finished dataset(s) from {out}")
    console.print(f"wrote {len(result.files)} files to {out} in {result.seconds:.0f} s")


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SpeechkernError(f"{option} {text!r}: give a comma list of numbers such as 0.5,2,8") from None
    if not values:
        raise SpeechkernError(f"{option} {text!r}: give at least one value")
    return values


@app.command(cls=PlainCommand)
def asymptotics(
    out: Path = typer.Option(Path("runs/losses-asymptotics"), "--out", help="Folder for the PNG figures, CSV, JSON."),
    r_min: float = typer.Option(0.25, "--r-min", help="Smallest R (rescaling of the one-hot targets) of the grid."),
    r_max: float = typer.Option(100.0, "--r-max", help="Largest R of the grid."),
    r_points: int = typer.Option(14, "--r-points", min=2, max=10_000, help="Log-spaced R values of the theory curves."),
    sim_r: str = typer.Option("0.5,4,32", "--sim-r", help="Comma list of the R values that are simulated."),
    sim_n: int = typer.Option(500, "--sim-n", min=2, help="Training samples of the simulations of Figs 3.2–3.3."),
    seeds: int = typer.Option(2, "--seeds", min=1, help="Training sets per simulated point."),
    lam: float = typer.Option(1e-5, "--lambda", help="λ of the penalty (λ/2)‖w‖² (the chapter's 10⁻⁵)."),
    samples: int = typer.Option(50_000, "--samples", help="Monte Carlo draws per predicted accuracy (1 or more)."),
    no_simulation: bool = typer.Option(False, "--no-simulation", help="Draw the theory only."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results in a non-empty --out folder."),
) -> None:
    """Figures 3.2–3.5 of the thesis's chapter 3: accuracy against R from eqs 3.21 and 3.9–3.10, with eq. 3.7
    minimised at finite size as points.

    Writes fig3_2.png … fig3_5.png, theory.csv, simulation.csv, comparison.csv, optimal_R.csv and results.json,
    and prints the optimal R per curve. See docs/losses-asymptotics.md.
    """
    import numpy as np

    from speechkern.losses import asymptotics_figures as figures

    try:
        if not 0 < r_min < r_max < math.inf:
            raise SpeechkernError(f"--r-min {r_min} and --r-max {r_max}: give finite 0 < r-min < r-max")
        settings = figures.FigureSettings(
            R_values=tuple(float(v) for v in np.logspace(np.log10(r_min), np.log10(r_max), r_points)),
            sim_R=_floats(sim_r, "--sim-r"),
            lam=lam,
            sim_n=sim_n,
            seeds=seeds,
            samples=samples,
            simulate=not no_simulation,
        )
        with progress_ui():
            try:
                result = figures.run_asymptotics(out, settings, overwrite=overwrite)
            except KeyboardInterrupt:  # nothing is kept: "run the same command again to continue" promised a resume
                raise KeyboardInterrupt("nothing was kept (the figures are written at the end); the same command "
                                        "starts again from the beginning; --no-simulation draws the theory alone, "
                                        "about a third of the time") from None  # fmt: skip
    except SpeechkernError as err:
        fail(str(err))
        return
    table = Table(title="Optimal R on the grid (eqs 3.21, 3.9–3.10 as printed) and the minimiser's accuracy")
    for name in ("figure", "curve", "optimal R", "accuracy there", "at R = 1", "λ → 0⁺ theory", "simulated"):
        table.add_column(name, justify="right")
    for o in result.optimal:
        table.add_row(
            o["figure"],
            o["curve"],
            f"{o['optimal_R']:.3g}",
            f"{o['accuracy_at_optimum']:.3f}",
            f"{o['accuracy_at_R1']:.3f}",
            "" if np.isnan(o["min_norm_accuracy_all_R"]) else f"{o['min_norm_accuracy_all_R']:.3f}",
            "" if np.isnan(o["simulated_accuracy_all_R"]) else f"{o['simulated_accuracy_all_R']:.3f}",
        )
    stdout.print(table)
    for key, name in (("difference", "eqs 3.21 as printed"), ("min_norm_difference", "λ → 0⁺ minimiser theory")):
        diffs = [abs(c[key]) for c in result.comparison if not np.isnan(c[key])]
        if diffs:
            console.print(
                f"{name} − simulation: mean |difference| {np.mean(diffs):.3f}, largest {max(diffs):.3f} "
                f"over {len(diffs)} points"
            )
    console.print(f"wrote {len(result.files)} files to {out} in {result.seconds:.0f} s")
