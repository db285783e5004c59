"""Entry point of the ``speechkern`` command: sub-commands are thin wrappers over the library.

Start-up stays light (``speechkern --help`` well under a second): command modules import torch, matplotlib and
the library's heavy modules inside the command bodies, and the ``losses`` and ``collapse`` groups are imported
only when one of their commands runs. ``benchmarks/cli_startup.py`` measures it.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import sys
import threading

import typer

import speechkern
from speechkern.errors import SpeechkernError

from . import tools, train
from .ui import CommandWarnings, PlainCommand, PlainGroup, displayable, fail, first_sentence, to_flags

# Groups imported on first use: name -> (module, the one-line help `speechkern --help` shows).
LAZY_GROUPS = {
    "collapse": ("speechkern_cli.collapse", "Neural-collapse measures on train and test data."),
    "losses": ("speechkern_cli.losses", "Square, rescaled square and squentropy losses; calibration bench."),
}


class _Commands(PlainGroup):
    """The root group: ``losses`` and ``collapse`` are imported when one of their commands runs, not at start-up."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return [*self.commands, *(name for name in LAZY_GROUPS if name not in self.commands)]

    def get_command(self, ctx: typer.Context, cmd_name: str):
        if cmd_name in LAZY_GROUPS and self.commands.get(cmd_name) is None:
            module = importlib.import_module(LAZY_GROUPS[cmd_name][0])
            self.commands[cmd_name] = typer.main.get_command(module.app)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        for name in LAZY_GROUPS:  # Click's "did you mean" looks in self.commands: list the lazy groups there too
            self.commands.setdefault(name, None)  # type: ignore[arg-type]
        try:
            return super().resolve_command(ctx, args)
        finally:
            for name in LAZY_GROUPS:
                if self.commands.get(name) is None:
                    del self.commands[name]

    def command_rows(self, ctx: typer.Context) -> list[tuple[str, str]]:
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if name in LAZY_GROUPS:
                rows.append((name, LAZY_GROUPS[name][1]))  # without importing the group
            elif command is not None and not command.hidden:
                rows.append((name, command.short_help or first_sentence(command.help or "")))
        return rows


app = typer.Typer(
    name="speechkern",
    cls=_Commands,
    help="Speech enhancement with large-scale kernel machines: train, evaluate and enhance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help (see ui.PlainCommand)
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


app.command("train", cls=PlainCommand)(train.train)
app.command("evaluate", cls=PlainCommand)(train.evaluate)
app.command("enhance", cls=PlainCommand)(tools.enhance)
app.command("mix", cls=PlainCommand)(tools.mix)
app.command("oracle", cls=PlainCommand)(tools.oracle)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; user errors become one line on stderr and exit code 2, an interrupt one line and 130."""
    if argv is None:  # a real process, not a test calling main()
        _terminate_like_interrupt()
        _quiet_resource_tracker()
    warnings = CommandWarnings()
    logging.getLogger("speechkern").addHandler(warnings)
    try:
        try:
            app(args=argv, prog_name="speechkern")
        except SpeechkernError as err:
            fail(str(err))
        except OSError as err:  # a path the system refuses, met wherever a command first looks at it
            if err.errno not in PATH_ERRORS:
                raise
            fail(path_error(err))
        except (KeyboardInterrupt, SystemExit) as exc:
            interrupt = _interrupt_of(exc)  # Typer turns Ctrl-C into exit 130, with the interrupt as its cause
            if interrupt is None:
                raise
            hint = str(interrupt) or "run the same command again (with --resume for train) to continue"
            print(displayable(f"interrupted; {to_flags(hint)}"), file=sys.stderr)
            if argv is None:  # a real process: leave now, without waiting on worker threads still busy with old work
                _exit(130)
            raise SystemExit(130) from None
    except SystemExit as done:
        if argv is not None:
            raise
        _leave(done.code)
    finally:
        logging.getLogger("speechkern").removeHandler(warnings)
    if argv is None:
        _leave(0)


# Errors of a path the user gave, not of speechkern: one line naming it, not a traceback from the first
# os.stat of it (Path.exists raises for these, and a name too long for the file system reached every command).
PATH_ERRORS = {errno.ENAMETOOLONG: "the name is too long for the file system; give a shorter path",
                errno.EACCES: "permission denied; give a path you may read and write, or change its permissions",
                errno.EPERM: "operation not permitted; give another path",
                errno.EROFS: "the file system is read-only; give a path on a writable one",
                errno.ENOSPC: "no space left on the device; free some space or give a path on another disk",
                errno.EDQUOT: "the disk quota is exceeded; free some space or give a path on another disk"}  # fmt: skip


def path_error(err: OSError) -> str:
    """One line for an OSError of a path: the path (its middle left out when longer than 200 characters), what
    the system said, and what to do."""
    name = str(err.filename) if err.filename is not None else "a path"
    if len(name) > 200:
        name = f"{name[:80]}…{name[-40:]} ({len(name)} characters)"
    return f"{name}: {PATH_ERRORS.get(err.errno, err.strerror)}"


def _leave(code: int | str | None) -> None:
    """End a real process whose command has finished with ``code``: the exit work Python would do (non-daemon
    threads joined, atexit functions: logs closed, worker processes stopped) with Ctrl-C and SIGTERM noted, not
    raised, then exit at once. An interrupt there no longer prints a traceback from an exit function, nor, once
    Python has restored the default handler, kills the process with status -2 and no word: it gets its one line
    and 130, and the finished outputs stay."""
    import atexit
    import signal

    late: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, frame: late.append(number))
    if isinstance(code, str):  # sys.exit("message"), as Python prints it
        print(displayable(code), file=sys.stderr)
    code = code if isinstance(code, int) else (0 if code is None else 1)
    with contextlib.suppress(Exception):
        threading._shutdown()  # what Python runs first at exit (concurrent.futures and loky register there)
    atexit._run_exitfuncs()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    if late:
        print("interrupted after the command had finished; its outputs are complete", file=sys.stderr)
        code = 130
    _exit(code)


def _exit(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`) or stream
            stream.flush()
    os._exit(code)


def _terminate_like_interrupt() -> None:
    """Handle SIGTERM (``kill``, ``timeout``, batch schedulers) as Ctrl-C, so that atomic writes remove their
    temporary ``.part`` files and ``train`` says how to resume, instead of dying on the spot."""
    import signal

    def interrupt(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM during clean-up must not cut it short
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _quiet_resource_tracker() -> None:
    """After an interrupt this process leaves at once, and the resource tracker that joblib's worker processes
    start (a process of its own, which inherits the environment) warned of the "leaked" semaphores it then
    removes, two lines of UserWarning after the interrupt's one line. Those warnings are left out."""
    quiet = "ignore:resource_tracker:UserWarning"
    given = os.environ.get("PYTHONWARNINGS", "")
    if quiet not in given:
        os.environ["PYTHONWARNINGS"] = f"{given},{quiet}" if given else quiet


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
