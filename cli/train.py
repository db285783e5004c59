"""``speechkern train`` and ``speechkern evaluate``."""

from __future__ import annotations

import json
import shlex
import signal
import threading
from pathlib import Path

import typer

from speechkern.errors import SpeechkernError

from .ui import console, progress_ui, stdout


def train(
    recipe_dir: Path = typer.Argument(..., help="Recipe folder holding recipe.toml, e.g. recipes/demo."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: --set data.snrs=[-5,0,5]."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory [default: runs/<recipe name>]."),
    models: str = typer.Option(None, "--models", help="kernel, kernel1 (single kernel), dnn [default: the recipe's]."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in the run directory."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run directory and start again."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda [default: the recipe's, auto]."),
    workers: int = typer.Option(None, "--workers", min=0, help="Feature-extraction processes [default: one per core]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    ray: bool = typer.Option(False, "--ray", help="Train on a local Ray instance with --workers CPUs (default: all)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Train on the Ray cluster at this address."),
    gpus_per_task: float = typer.Option(
        None, "--gpus-per-task", min=0, help="GPUs each Ray task asks for [default: 1 with --device cuda, else 0]."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train the recipe's models (kernel machine and DNN by default) into a run directory.

    Interrupt with Ctrl-C at any time; the same command with --resume continues where it stopped. With --ray or
    --ray-address, autotune evaluations, subband/DNN fits and the local solver's leaves run as parallel Ray tasks;
    the run directory is the same as a local run's, and it resumes the same way.
    """
    from rich.markup import escape
    from rich.table import Table

    from speechkern.models.select import record_run
    from speechkern.parallel import make_executor
    from speechkern.pipeline import MODEL_NAMES, format_minutes
    from speechkern.pipeline import train as run_training
    from speechkern.recipe import load_recipe

    if gpus_per_task is not None and not (ray or ray_address):  # a local run has no tasks to give GPUs to
        raise SpeechkernError(f"--gpus-per-task {gpus_per_task:g}: applies to Ray tasks only; add --ray (or "
                              "--ray-address ADDRESS), or drop it (--device cuda trains on the GPU)")  # fmt: skip
    if resume and overwrite:
        raise SpeechkernError("--resume and --overwrite: choose one; --resume continues the run, --overwrite deletes "
                              "it (finished models too) and starts again")  # fmt: skip
    overrides = list(set_)
    if workers is not None:
        overrides.append(f"train.workers={workers}")
    recipe = load_recipe(recipe_dir, overrides)
    run_dir = out or Path("runs") / recipe.name
    _check_run_dir(run_dir)
    names = None if models is None else [m.strip() for m in models.split(",")]
    if names is not None and not all(names):  # '' or 'kernel,' chose nothing, or once meant the recipe's models
        raise SpeechkernError(f"--models {models!r}: expected a comma-separated list of {', '.join(MODEL_NAMES)}, "
                              f"such as kernel,dnn; leave --models out to train the recipe's "
                              f"({', '.join(recipe.train.models)})")  # fmt: skip
    gpus = gpus_per_task if gpus_per_task is not None else (1.0 if (device or "").startswith("cuda") else 0.0)
    # Before the log file: Ray logs as it starts, when the run folder is not made (or not yet replaced) yet.
    term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    executor = make_executor(ray=ray, address=ray_address, workers=workers or 0, gpus_per_task=gpus)
    if callable(term):  # Ray replaces it with a handler that aborts: `kill` must interrupt like Ctrl-C again
        signal.signal(signal.SIGTERM, term)
    with progress_ui(log_file=run_dir / "train.log", quiet=quiet):
        try:
            summary = run_training(recipe, run_dir, models=names, resume=resume, overwrite=overwrite, device=device,
                                   executor=executor, cache_dir=None if no_cache else "default")  # fmt: skip
        except KeyboardInterrupt:
            again = ["speechkern", "train", str(recipe_dir), *(f"--set={s}" for s in set_), "--out", str(run_dir),
                     "--resume"]  # fmt: skip
            for flag, value in (("--models", models), ("--device", device), ("--workers", workers)):
                again += [flag, str(value)] if value is not None else []
            again += ["--no-cache"] if no_cache else []
            raise KeyboardInterrupt(f"continue with: {shlex.join(again)}") from None
        finally:
            executor.close()
    try:
        record_run(run_dir)  # `speechkern enhance` without --model finds runs trained with --out too
    except (OSError, SpeechkernError) as err:  # a read-only current folder: the run itself is complete
        reason = getattr(err, "strerror", None) or err
        console.print(f"[yellow]warning:[/] could not note the run in runs/index.txt ({escape(str(reason))}); "
                      f"give --model {escape(str(run_dir))} to enhance with it")  # fmt: skip
    table = Table(title=f"trained into {run_dir}")
    for column in ("model", "condition", "subbands", "fit minutes", "autotune minutes", "transform minutes", "epochs",
                   "validation MSE"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "condition") else "right")
    for t in summary.timings:
        table.add_row(t.model, t.condition, str(t.subbands), format_minutes(t.minutes),
                      format_minutes(t.extra.get("autotune_minutes")), format_minutes(t.extra.get("transform_minutes")),
                      str(t.epochs), f"{t.val_mse:.5f}")  # fmt: skip
    stdout.print(table)
    if summary.skipped:
        console.print(f"kept from an earlier run: {', '.join(summary.skipped)}")
    console.print(f"next: speechkern evaluate {run_dir}   |   speechkern enhance NOISY.wav --model {run_dir}")


def _check_run_dir(run_dir: Path) -> None:
    """Refuse, before any work, a run directory that is a file or lies where nothing can be written (the lock
    file beside it, the models inside it), and a folder with files that is no run (a project, a recipe folder),
    which --overwrite would delete and --resume fill."""
    from speechkern.outputs import check_writable
    from speechkern.pipeline import check_not_foreign, check_not_inside_run

    if run_dir.exists() and not run_dir.is_dir():
        raise SpeechkernError(f"{run_dir}: is a file, not a run directory; choose another --out")
    check_not_inside_run(run_dir)
    check_not_foreign(run_dir)  # here too: the log file is written into the folder before the run opens
    check_writable(run_dir / "recipe.toml")


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `speechkern train`."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Processes for resynthesis and metrics [default: one per core]."
    ),
    limit: int = typer.Option(0, "--limit", min=0, help="Score only the first N test mixtures (0 = all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report."),
    device: str = typer.Option("cpu", "--device", help="Where features and models run: cpu, cuda or auto."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Score the noisy input, the ideal mask and every trained model on the test split; write report/.

    Metrics: mask MSE, STOI, ESTOI, PESQ (wide-band 16 kHz and narrow-band 8 kHz), SI-SDR, and for binary masks
    accuracy and HIT−FA, per condition (noise × SNR). Tables, figures and report/index.html go into RUN_DIR/report.
    """
    from speechkern.device import resolve_device
    from speechkern.evaluate import evaluate as run_evaluation
    from speechkern.pipeline import is_run
    from speechkern.recipe import MAX_INT, load_run_recipe
    from speechkern.report import check_report_folder, report_exists, results_json, results_markdown, write_report

    if workers > MAX_INT:  # joblib's semaphore overflows past a C int
        raise SpeechkernError(f"--workers {workers}: expected at most {MAX_INT} processes; 0 is one per core")
    if (run_dir / "recipe.toml").is_file() and not (run_dir / "models").is_dir():  # before anything is written
        if is_run(run_dir):
            again = shlex.join(["speechkern", "train", str(run_dir / "recipe.toml"), "--out", str(run_dir), "--resume"])
            raise SpeechkernError(f"{run_dir}: no models/ yet, the run stopped before any model was trained; finish "
                                  f"it: `{again}`")  # fmt: skip
        raise SpeechkernError(f"{run_dir}: holds a recipe but no models/, so it is a recipe folder, not a run; train "
                              f"it first (`speechkern train {run_dir}` writes runs/<name>), then evaluate that run "
                              "directory")  # fmt: skip
    # a folder that is no run (its recipe.toml lost), or whose recipe.toml is unreadable or cut short, is told so,
    # not sent to --overwrite first
    if report_exists(run_dir) and not overwrite and (run_dir / "recipe.toml").is_file():
        load_run_recipe(run_dir)
        raise SpeechkernError(f"{run_dir / 'report'}: a report exists already; pass --overwrite to replace it")
    if run_dir.is_dir():  # where the report goes must take it, before the scoring (a missing run is the library's)
        check_report_folder(run_dir)
    with progress_ui(quiet=quiet or as_json):
        ev = run_evaluation(run_dir, workers=workers, limit=limit, device=str(resolve_device(device)))
        if not ev.files:  # an empty report with exit 0 would pass for a result
            raise SpeechkernError(f"{run_dir / 'manifests' / 'test.jsonl'}: holds no test mixtures, so nothing was "
                                  "scored; delete it (evaluate rebuilds it from the run's recipe) or raise "
                                  "data.n_test")  # fmt: skip
        out = write_report(ev, run_dir, overwrite=True)
    if as_json:
        print(json.dumps(results_json(ev)))
        return
    print(results_markdown(ev.rows))
    if ev.problems:
        console.print(f"[yellow]{len(ev.problems)} scores could not be computed[/]; see {out / 'index.html'}")
    console.print(f"report: {out / 'index.html'}")
