"""``speechkern collapse``: measure neural collapse on train and test data (experiments of SPEC §10)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
from rich.table import Table

from speechkern.errors import SpeechkernError
from speechkern.limits import MAX_SEED
from speechkern.outputs import PART, check_writable, remove_parts

from .ui import PlainCommand, console, fail, plain_typer, progress_ui, stdout

app = plain_typer(
    help="Neural collapse of last-layer features on train and test data: measures and experiments.",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Neural collapse of last-layer features on train and test data."""


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SpeechkernError(
            f"--train-sizes must be a comma list of integers like 100,300,1000; got {text!r}."
        ) from None
    if not sizes or min(sizes) < 1:
        raise SpeechkernError(f"--train-sizes needs positive integers like 100,300,1000; got {text!r}.")
    return sizes


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@app.command(cls=PlainCommand)
def run(
    out: Path = typer.Option(
        Path("runs/collapse"), "--out", help="Output folder (new, empty, or a stopped run's log only)."
    ),
    dataset: str = typer.Option("digits", "--dataset", help="Offline scikit-learn dataset: digits, iris or wine."),
    epochs: int = typer.Option(300, "--epochs", min=1, help="Training epochs per run (past zero train error)."),
    train_sizes: str | None = typer.Option(
        None,
        "--train-sizes",
        help="Comma list of train-set sizes [default: those of 50,100,300,1000 that the dataset's train pool "
        "holds: digits all four, iris and wine 50,100].",
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=MAX_SEED, help="Seed of the data split, initialisation and batch order."
    ),
    transfer: bool = typer.Option(True, "--transfer/--no-transfer", help="Run the super-class transfer experiment."),
    checkpoints: int = typer.Option(25, "--checkpoints", help="Log-spaced epochs at which to measure (and epoch 0)."),
    width: int = typer.Option(256, "--width", min=1, help="Hidden units per layer of the MLP."),
    device: str = typer.Option("cpu", "--device", help="Torch device for training: cpu, cuda, cuda:1, ..."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow writing into a non-empty output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a small network past zero training error and record collapse on train and test data.

    Writes over_time.csv, train_sizes.csv, transfer.csv, results.json and PNG curves into --out. Interrupted, the
    same command resumes: each finished train size and the transfer experiment are kept in --out/parts.
    """
    from speechkern.collapse.experiments import (
        CollapseConfig,
        check_config,
        check_out_dir,
        run_experiments,
        write_outputs,
    )

    try:
        config = CollapseConfig(
            dataset=dataset,
            epochs=epochs,
            train_sizes=None if train_sizes is None else _sizes(train_sizes),
            seed=seed,
            transfer=transfer,
            checkpoints=checkpoints,
            width=width,
            device=device,
        )
        check_config(config)
        # a run stopped before its results leaves its log and finished parts (the .part files of a killed one):
        # the same command resumes there, keeping the parts of the same settings
        parts = out / "parts"
        resumable = ("collapse.log", parts.name)
        leftover = out.is_dir() and all(p.name in resumable or PART.match(p.name) for p in out.iterdir())
        check_out_dir(out, overwrite or leftover)  # refuse before minutes of training, not after
        check_writable(out / "results.json")  # a folder below a file, or read-only
        remove_parts(out)
        if overwrite and parts.is_dir():  # --overwrite starts again
            shutil.rmtree(parts)
        out.mkdir(parents=True, exist_ok=True)
        with progress_ui(log_file=out / "collapse.log", quiet=quiet or as_json):
            results = run_experiments(config, parts_dir=parts)
        written = write_outputs(results, out, overwrite=True)
        shutil.rmtree(parts, ignore_errors=True)  # the results hold them now
    except SpeechkernError as err:
        fail(str(err))
        return
    if as_json:
        print(json.dumps({**results.summary, "out": str(out), "files": [p.name for p in written]}, indent=2))
        return
    table = Table(title=f"Neural collapse on {results.dataset['name']} (final epoch {config.epochs})")
    for column in ("train size", "zero-error epoch", "TrainVar", "StrongTestVar", "WeakTestVar", "test error"):
        table.add_column(column, justify="right")
    for row in results.train_sizes:
        table.add_row(
            *(
                _fmt(row[k])
                for k in (
                    "train_size",
                    "zero_train_error_epoch",
                    "train_variance",
                    "strong_test_variance",
                    "weak_test_variance",
                    "test_error",
                )
            )
        )
    stdout.print(table)
    if "transfer" in results.summary:
        t = results.summary["transfer"]
        stdout.print(
            f"transfer (2 super-classes → all): probe test error {_fmt(t['initial_probe_test_error'])} at init, "
            f"best {_fmt(t['best_probe_test_error'])} at epoch {t['best_probe_epoch']}, "
            f"{_fmt(t['final_probe_test_error'])} at the end "
            f"(coarse TrainVar {_fmt(t['final_coarse_train_variance'])}); "
            f"full fine-tune {_fmt(t['final_finetune_test_error'])}"
        )
    console.print(f"wrote {len(written)} files to {out} in {results.seconds:.0f} s")
