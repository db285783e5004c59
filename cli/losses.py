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


@app.command(cls=PlainCommand)
def bench(
    out: Path = typer.Option(Path("runs/losses-bench"), "--out", help="Folder for results.{md,csv,json} and diagrams."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds per dataset and loss (split, initial weights, order)."),
    epochs: int = typer.Option(bench_lib.BenchConfig.epochs, "--epochs", min=1, help="Training epochs per run."),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Folder of extra datasets, one CSV each: header row, numeric feature columns, last "
        "column 'label' (the class).",
    ),
    dataset: list[str] | None = typer.Option(
        None,
        "--dataset",
        help="Run only this dataset (repeatable) "
        f"[default: {', '.join(bench_lib.BUILTIN_DATASETS)} and those of --data].",
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results in a non-empty --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of a table."),
) -> None:
    """Train one small network with each loss on offline datasets; report test accuracy and ECE (mean ± std)."""
    try:
        config = bench_lib.BenchConfig(seeds=seeds, epochs=epochs, device=device)
        with progress_ui(quiet=as_json):
            result = bench_lib.run_benchmark(out, config, data_dir=data, datasets=dataset, overwrite=overwrite)
    except SpeechkernError as err:
        fail(str(err))
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    cfg = result.config
    table = Table(
        title=f"Test accuracy and ECE (%), mean ± std over {seeds} seed(s)",
        caption=f"rescaled_square: t={cfg.rescaled_t:g}, M={cfg.rescaled_M:g}; ECE of the softmax; "
        "'ECE inv.': square-loss outputs mapped by the inverse minimiser",
    )
    for i, name in enumerate(("dataset", "loss", "accuracy", "ECE", "ECE inv.")):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for cells in bench_lib.table_rows(result, short_names=True):
        table.add_row(*cells)
    stdout.print(table)
    console.print(f"wrote {len(result.files)} files to {out} in {result.seconds:.0f} s")
