"""Entry point of the ``speechkern`` command: sub-commands are thin wrappers over the library."""

from __future__ import annotations

import sys

import typer

import speechkern
from speechkern.errors import SpeechkernError

from . import collapse, losses, tools, train
from .ui import fail

app = typer.Typer(
    name="speechkern",
    help="Speech enhancement with large-scale kernel machines: train, evaluate and enhance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"speechkern {speechkern.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Speech enhancement with large-scale kernel machines."""


app.command("train")(train.train)
app.command("evaluate")(train.evaluate)
app.command("enhance")(tools.enhance)
app.command("mix")(tools.mix)
app.command("oracle")(tools.oracle)
app.add_typer(collapse.app, name="collapse", help="Neural-collapse measures on train and test data.")
app.add_typer(losses.app, name="losses", help="Square, rescaled square and squentropy losses; calibration bench.")


def main(argv: list[str] | None = None) -> None:
    """Run the command line; user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="speechkern")
    except SpeechkernError as err:
        fail(str(err))
    except (KeyboardInterrupt, SystemExit) as exc:
        interrupt = _interrupt_of(exc)  # Typer turns Ctrl-C into exit 130, with the interrupt as its cause
        if interrupt is None:
            raise
        hint = str(interrupt) or "run the same command again (with --resume for train) to continue"
        print(f"interrupted; {hint}", file=sys.stderr)
        raise SystemExit(130) from None


def _interrupt_of(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt ``exc`` is or comes from, if any; its message is the command's resume hint."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    main()
