"""``speechkern losses``: the classification-losses benchmark (square, rescaled square, squentropy vs cross-entropy)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from speechkern.errors import SpeechkernError
from speechkern.losses import bench as bench_lib

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
    unknown = [n for n in names if n not in bench_lib.LOSSES]
    if unknown or not names:
        raise SpeechkernError(
            f"--losses {text!r}: unknown loss(es) {', '.join(unknown) or '(none given)'}; give a comma list of "
            f"{', '.join(bench_lib.LOSSES)}"
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
        False, "--builtin", help=f"Also run the built-in sets ({', '.join(bench_lib.BUILTIN_DATASETS)})."
    ),
    dataset: list[str] | None = typer.Option(
        None,
        "--dataset",
        help="Run only this dataset (repeatable; a qualified name such as uci/iris, or a built-in) "
        "[default: every set of --data, and the built-in ones with --builtin].",
    ),
    losses: str = typer.Option(",".join(bench_lib.LOSSES), "--losses", help="Comma list of losses to compare."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds per split and loss (initial weights, batch order)."),
    epochs: int = typer.Option(bench_lib.BenchConfig.epochs, "--epochs", min=1, help="Training epochs per run."),
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
        bench_lib.BenchConfig.selection,
        "--selection",
        help="Which epoch (and learning rate) a run keeps: "
        + "; ".join(f"{rule}: {text}" for rule, text in bench_lib.SELECTION_HELP.items())
        + ". docs/losses.md compares them.",
    ),
    smoothing_window: int = typer.Option(
        bench_lib.BenchConfig.smoothing_window,
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
    out: Path = typer.Option(Path("runs/losses-asymptotics"), "--out", help="Folder for the PNG plots, CSV, JSON."),
    k: str = typer.Option("2,5,10,20", "--k", help="Comma list of class counts."),
    beta: str = typer.Option("0.5,2,8", "--beta", help="Comma list of β = n/d (samples per input dimension)."),
    r_min: float = typer.Option(0.1, "--r-min", help="Smallest R (weight of the true-class term) of the grid."),
    r_max: float = typer.Option(100.0, "--r-max", help="Largest R of the grid."),
    r_points: int = typer.Option(13, "--r-points", min=2, help="Log-spaced R values."),
    snr: float = typer.Option(4.0, "--snr", help="r = squared norm of each class mean (noise has unit variance)."),
    ridge: float = typer.Option(0.1, "--ridge", help="λ of the read-out penalty λ‖v‖² (> 0)."),
    label_noise: float = typer.Option(0.0, "--label-noise", help="Probability that a training label is resampled."),
    model: str = typer.Option("relu", "--model", help="relu (wide one-hidden-layer ReLU network) or linear."),
    simulate_d: int | None = typer.Option(
        None, "--simulate-d", help="Also train the network at this input dimension (e.g. 200; slow) and plot it."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results in a non-empty --out folder."),
) -> None:
    """Precise asymptotics of the rescaled square loss: predicted accuracy against R for several k and β.

    Solves the state-evolution fixed point of docs/losses-asymptotics.md for each setting and writes
    accuracy_vs_R.png, optimal_R.png, predictions.csv and results.json.
    """
    import numpy as np

    from speechkern.losses import asymptotics as asym

    try:
        if not 0 < r_min < r_max:
            raise SpeechkernError(f"--r-min {r_min} and --r-max {r_max}: give 0 < r-min < r-max")
        ks = tuple(int(v) for v in _floats(k, "--k"))
        base = asym.Problem(k=2, beta=1.0, snr=snr, ridge=ridge, label_noise=label_noise, model=model)
        grid = tuple(float(v) for v in np.logspace(np.log10(r_min), np.log10(r_max), r_points))
        with progress_ui():
            result = asym.run_asymptotics(
                out, ks, _floats(beta, "--beta"), grid, base, simulate_d=simulate_d, overwrite=overwrite
            )
    except SpeechkernError as err:
        fail(str(err))
        return
    table = Table(title="Optimal R on the grid (predicted)")
    for name in ("β", "k", "optimal R", "accuracy there", "accuracy at R = 1", "Bayes accuracy"):
        table.add_column(name, justify="right")
    for o in result.optimal:
        table.add_row(
            f"{o['beta']:g}",
            str(o["k"]),
            f"{o['optimal_R']:.3g}" if o["resolved"] else f"({o['optimal_R']:.3g}, flat)",
            f"{o['accuracy_at_optimum']:.3f}",
            f"{o['accuracy_at_R1']:.3f}",
            f"{o['bayes_accuracy']:.3f}",
        )
    stdout.print(table)
    console.print(f"wrote {len(result.files)} files to {out}")
