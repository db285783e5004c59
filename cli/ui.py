"""Terminal side of the command line: plain help pages, progress from the library's events, one-line errors.

Output conventions: results (tables, JSON, the files written) go to stdout through :data:`stdout`; progress, hints,
warnings and errors go to stderr through :data:`console`. Neither wraps long lines, so paths and suggested
commands stay copyable. On a terminal progress shows as bars; elsewhere (a log, a pipe, a batch job) as one line
per step, and at least every :data:`LINE_EVERY_S` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

try:  # Typer's own copy of Click (0.2x), whose exceptions its commands raise; else Click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

from speechkern.progress import Progress as ProgressEvent
from speechkern.progress import ProgressTracker, format_duration

LINE_EVERY_S = 30.0  # the longest silence of a long command without a terminal


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``): a file name holding a newline or a
    terminal escape must not split a one-line message, nor a line a script reads, nor drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch
                   for ch in text)  # fmt: skip


def displayable(text: str) -> str:
    """``text`` as a strict UTF-8 stream can write it: the bytes of a file name that are not UTF-8 (which Python
    keeps as surrogate escapes) shown as ``\\xNN``, instead of a UnicodeEncodeError that would stop a batch."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _DisplayableStream:
    """``sys.stdout`` or ``sys.stderr`` (looked up at each write, as tests replace them) through :func:`displayable`."""

    def __init__(self, name: str) -> None:
        self._name = name

    def write(self, text: str) -> int:
        return getattr(sys, self._name).write(displayable(text))

    def __getattr__(self, attr: str) -> Any:
        return getattr(getattr(sys, self._name), attr)


class _LazyConsole:
    """A rich Console made on first use: importing rich costs start-up time that `--help` does not need."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console = None

    def get(self):
        if self._console is None:
            from rich.console import Console

            # soft_wrap: never break a path or a command over two lines (rich would at 80 columns in a pipe)
            stream = _DisplayableStream("stderr" if self._stderr else "stdout")
            self._console = Console(file=stream, stderr=self._stderr, soft_wrap=True)
            if not self._console.is_terminal:
                self._console.width = 1_000_000  # tables size to their content: titles and cells stay on one line
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


console = _LazyConsole(stderr=True)  # messages: progress, hints, warnings
stdout = _LazyConsole(stderr=False)  # results: tables and summaries a script may read


# --------------------------------------------------------------------------------------------------------------
# Help pages


def _argument_name(param) -> str:
    name = (param.metavar or param.name or "").upper()
    return f"{name}..." if param.nargs != 1 else name


_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def _metavar(param, ctx) -> str:
    """Click's metavar for an option's value: TEXT, INTEGER, FLOAT, PATH, or the choices as [a|b]."""
    if param.metavar:
        return param.metavar
    if hasattr(param, "type"):  # a plain Click parameter
        name = param.type.name
    else:  # Typer describes the type as "<int>", "<list[str]>", "<float range>", "<path>", "<a|b>"
        name = param.display_type(ctx).strip("<>")
        name = re.sub(r"^list\[(.*)\]$", r"\1", name).removesuffix(" range")
    if "|" in name:
        return f"[{name}]"
    return _TYPE_NAMES.get(name, name).upper()


def _default_text(param, ctx) -> str | None:
    """The default as the user would type it, or None where there is nothing to show."""
    default = param.get_default(ctx, call=False)
    if callable(default):
        return None
    if getattr(param, "is_bool_flag", False) or getattr(param, "is_flag", False):
        if param.secondary_opts:  # --transfer/--no-transfer: name the switch that is on
            return (param.opts if default else param.secondary_opts)[-1]
        return None  # a plain flag is off unless given
    if default is None or (isinstance(default, list | tuple) and not default):
        return None
    if isinstance(default, list | tuple):
        return ", ".join(map(str, default))
    return str(getattr(default, "value", default))


def _help_text(param, ctx) -> str:
    """Help text with the default, the range and whether it is required, as Click writes them."""
    text = " ".join((getattr(param, "help", None) or "").split())
    extra = []
    default = _default_text(param, ctx)
    if default is not None and "[default:" not in text:
        extra.append(f"default: {default}")
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None or high is not None:
        extra.append(" and ".join(p for p in (f"x>={low}" if low is not None else "", f"x<={high}" if high is not None
                                               else "") if p))  # fmt: skip
    if param.required:
        extra.append("required")
    return f"{text}  [{'; '.join(extra)}]" if extra else text


def _format_params(command, ctx, formatter) -> None:
    arguments, options = [], []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            arguments.append((_argument_name(param), _help_text(param, ctx)))
            continue
        names = ", ".join(sorted(param.opts, key=lambda o: o.startswith("--")))
        if param.secondary_opts:
            names += " / " + ", ".join(param.secondary_opts)
        if not (param.is_flag or param.count):
            names += f" {_metavar(param, ctx)}"
        options.append((names, _help_text(param, ctx)))
    for title, rows in (("Arguments", arguments), ("Options", options)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def _usage_pieces(command, ctx) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = _argument_name(param)
            pieces.append(name if param.required else f"[{name}]")
    return pieces


class _OneLineUsageError(click_errors.UsageError):
    """Click's usage error (a bad option value, a missing argument, an unknown option or command) as one line,
    ``error: ... (see `speechkern enhance --help`)``, exit code 2: Click printed four (the usage line, a "Try"
    line, a blank line and the error), where every other refusal of the command line is one line."""

    def __init__(self, err: click_errors.UsageError) -> None:
        super().__init__(err.format_message(), err.ctx)
        self.exit_code = err.exit_code

    def show(self, file: Any = None) -> None:
        where = f" (see `{self.ctx.command_path} --help`)" if self.ctx is not None else ""
        message = one_line(self.format_message()).rstrip(".")
        print(displayable(f"error: {message}{where}"), file=file or sys.stderr)


_HELP = getattr(click_errors, "NoArgsIsHelpError", ())  # the help page of a group given no command, shown whole


@contextmanager
def _usage_in_one_line():
    try:
        yield
    except _HELP:
        raise
    except click_errors.UsageError as err:
        raise _OneLineUsageError(err) from None


class _OneLineUsage:
    """Mixin: usage errors met while parsing a command's arguments, or finding a group's command, in one line."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_in_one_line():
            return super().make_context(*args, **kwargs)  # type: ignore[misc]

    def resolve_command(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_in_one_line():
            return super().resolve_command(*args, **kwargs)  # type: ignore[misc]


class PlainCommand(_OneLineUsage, TyperCommand):
    """A command whose help is plain text: PATH/INTEGER metavars, every default shown, paragraphs rewrapped whole.

    Typer's own pages (rich boxes, ``<list[str]>`` metavars, ``{arg}`` in the usage line) lose text in Rich markup
    and read badly in a pipe; these pages follow Click's conventions, which scripts and users already know. Usage
    errors are one line (:class:`_OneLineUsageError`).
    """

    def collect_usage_pieces(self, ctx) -> list[str]:
        return _usage_pieces(self, ctx)

    def format_options(self, ctx, formatter) -> None:
        _format_params(self, ctx, formatter)


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line (Click would cut it mid-word)."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


class PlainGroup(_OneLineUsage, TyperGroup):
    """A command group with :class:`PlainCommand`'s help style; the command list shows whole first sentences."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]

    def command_rows(self, ctx) -> list[tuple[str, str]]:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.short_help or first_sentence(command.help or "")))
        return rows

    def format_options(self, ctx, formatter) -> None:
        _format_params(self, ctx, formatter)
        rows = self.command_rows(ctx)
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def plain_typer(**kwargs: Any) -> typer.Typer:
    """A ``typer.Typer`` whose pages use the plain help style (commands still need ``cls=PlainCommand``)."""
    kwargs.setdefault("cls", PlainGroup)
    return typer.Typer(rich_markup_mode=None, add_completion=False, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Progress


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class _ProgressHandler(logging.Handler):
    """Turns ``speechkern`` progress records into rich bars; other records of WARNING and above are printed."""

    def __init__(self, bars) -> None:
        super().__init__(logging.INFO)
        self.bars = bars
        self.tasks: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event: ProgressEvent | None = getattr(record, "progress", None)
        if event is None:
            if record.levelno >= logging.WARNING:
                from rich.markup import escape

                message = escape(to_flags(record.getMessage()))
                self.bars.console.print(f"[yellow]{record.levelname.lower()}:[/] {message}")
            return
        info = "  ".join(f"{k} {_short(v)}" for k, v in event.info.items())
        if event.task not in self.tasks:
            self.tasks[event.task] = self.bars.add_task(event.description, total=event.total, info=info)
        task_id = self.tasks[event.task]
        self.bars.update(
            task_id, completed=event.completed, total=event.total, info=info, description=event.description
        )
        if event.done:
            self.bars.update(task_id, completed=event.total or event.completed)


class _LineHandler(logging.Handler):
    """Progress as plain lines on stderr, for logs and pipes: ``[elapsed] what  how far  info  ETA``.

    A line is written when a task starts or ends, at a milestone (an epoch), and otherwise at most every
    ``every_s`` seconds; a heartbeat thread repeats the newest state when the library has been silent for
    ``every_s`` seconds, so a job log never stays quiet longer than that.
    """

    def __init__(self, stream, every_s: float = LINE_EVERY_S) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.every_s = every_s
        self.started = time.monotonic()
        self.trackers: dict[str, ProgressTracker] = {}
        self.last_line = self.started
        self.last_task_line: dict[str, float] = {}
        self.state_lock = threading.Lock()  # not `lock`: logging.Handler holds that one around emit()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._heartbeat, name="speechkern-progress", daemon=True)
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        event: ProgressEvent | None = getattr(record, "progress", None)
        with self.state_lock:
            now = time.monotonic()
            if event is None:
                if record.levelno >= logging.WARNING:
                    self._write(f"{record.levelname.lower()}: {to_flags(record.getMessage())}", now)
                return
            tracker = self.trackers.get(event.task)
            first = tracker is None
            if first:
                tracker = self.trackers[event.task] = ProgressTracker(now)
            tracker.update(event, now)
            due = now - self.last_task_line.get(event.task, -1e9) >= self.every_s
            if first or tracker.finished or event.milestone or due:
                self._write(self._line(tracker, now), now)
                self.last_task_line[event.task] = now

    def _line(self, tracker: ProgressTracker, now: float) -> str:
        return f"[{format_duration(now - self.started)}] {tracker.describe(now)}"

    def _write(self, text: str, now: float) -> None:
        print(displayable(text), file=self.stream, flush=True)
        self.last_line = now

    def _heartbeat(self) -> None:
        while not self.stop.wait(min(1.0, self.every_s / 4)):
            with self.state_lock:
                now = time.monotonic()
                if now - self.last_line < self.every_s:
                    continue
                running = [(t.updated, task) for task, t in self.trackers.items() if not t.finished]
                if running:
                    task = max(running)[1]
                    self._write(self._line(self.trackers[task], now), now)
                    self.last_task_line[task] = now
                else:
                    self._write(f"[{format_duration(now - self.started)}] working", now)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5.0)  # a daemon thread: never let closing (e.g. after Ctrl-C) wait on it for ever
        super().close()


class _ThrottleProgress(logging.Filter):
    """Keeps a log file readable: a progress record passes when its task starts or ends, or every few seconds."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        event: ProgressEvent | None = getattr(record, "progress", None)
        if event is None:
            return True
        now = time.monotonic()
        finished = event.done or (event.total is not None and event.completed >= event.total)
        if event.milestone or event.task not in self.last or finished or now - self.last[event.task] >= self.every_s:
            self.last[event.task] = now
            return True
        return False


@contextlib.contextmanager
def progress_ui(log_file: Path | None = None, quiet: bool = False, every_s: float = LINE_EVERY_S) -> Iterator[None]:
    """Show the library's progress events while the block runs; also log everything to ``log_file``.

    On a terminal: rich progress bars with the time left. Elsewhere: plain lines on stderr (:class:`_LineHandler`),
    at least every ``every_s`` seconds. ``quiet``: warnings only.
    """
    root = logging.getLogger("speechkern")
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = []
    bars = None
    term = console.get()
    if not quiet and term.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=term,
            transient=False,
        )
        handlers.append(_ProgressHandler(bars))
    elif not quiet:
        handlers.append(_LineHandler(sys.stderr, every_s=every_s))
    else:
        handlers.append(_WarningsOnly(sys.stderr))
    if log_file is not None:
        # delay: the file is opened at the first record, after the library has created (or refused) its folder
        file_handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        file_handler.addFilter(_ThrottleProgress())
        handlers.append(file_handler)
    for handler in handlers:
        root.addHandler(handler)
    started = time.perf_counter()
    global _ACTIVE_UIS
    _ACTIVE_UIS += 1
    try:
        with bars if bars is not None else contextlib.nullcontext():
            yield
    finally:
        _ACTIVE_UIS -= 1
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.debug("finished in %.1f s", time.perf_counter() - started)


_ACTIVE_UIS = 0  # progress_ui blocks running: they show warnings themselves


class CommandWarnings(logging.Handler):
    """Warnings of the library outside a :func:`progress_ui` block (while a command checks its inputs, or one
    that shows no progress: mix, oracle): one line each, ``warning: ...``, as inside one (Python's last-resort
    handler printed them bare, and once more inside the block)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if _ACTIVE_UIS == 0 and getattr(record, "progress", None) is None:
            print(displayable(f"{record.levelname.lower()}: {one_line(to_flags(record.getMessage()))}"),
                  file=sys.stderr, flush=True)  # fmt: skip


class _WarningsOnly(logging.Handler):
    """With --quiet: warnings and errors still reach stderr, one line each."""

    def __init__(self, stream) -> None:
        super().__init__(logging.WARNING)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "progress", None) is None:
            print(displayable(f"{record.levelname.lower()}: {to_flags(record.getMessage())}"), file=self.stream,
                  flush=True)  # fmt: skip


# The library names its parameters; the command line names the flags that set them.
_SWITCHES = {"overwrite": "--overwrite", "resume": "--resume", "per_channel": "--per-channel", "builtin": "--builtin"}
_VALUED = {"chunk_s": "--chunk-seconds", "val_fraction": "--val-fraction", "ray_address": "--ray-address",
           "data_dir": "--data", "atten_lim_db": "--atten-lim-db"}  # fmt: skip
# speechkern losses bench: its settings (BenchConfig) by the flags that set them
_BENCH = {  # fmt: skip
    "seeds": "--seeds",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "optimizer": "--optimizer",
    "learning_rates": "--lr",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "test_fraction": "--test-fraction",
    "val_fraction": "--val-fraction",
    "smoothing_window": "--smoothing-window",
    "rescaled_t": "--rescaled-t",
    "rescaled_M": "--rescaled-m",
}


def _resume_command(run: str, models: str | None) -> str:
    """The command that resumes ``run``; ``models``: the repr of a list of model names, or None."""
    command = ["speechkern", "train", str(Path(run) / "recipe.toml"), "--out", run, "--resume"]
    if models:
        command += ["--models", ",".join(re.findall(r"\w+", models))]
    return f"`{shlex.join(command)}`"


_FLAGS = (
    (re.compile(rf"\bbenchmark setting ({'|'.join(_BENCH)})=(?=\S)"), lambda m: f"{_BENCH[m[1]]} "),
    (re.compile(r"\bresume the run (.+?) \(resume=True(?:, models=\[([^\]]*)\])?\)"),
     lambda m: _resume_command(m[1], m[2])),
    (re.compile(r"\bcache_dir=None\b"), lambda m: "--no-cache"),
    (re.compile(r"\bdevice='cpu'"), lambda m: "--device cpu"),
    (re.compile(r"\bonly=\[(\w+)\]"), lambda m: f"--dataset {m[1]}"),
    (re.compile(rf"\b({'|'.join(_SWITCHES)})=True\b"), lambda m: _SWITCHES[m[1]]),
    (re.compile(rf"\b({'|'.join(_VALUED)})=(?=\S)"), lambda m: f"{_VALUED[m[1]]} "),
    (re.compile(rf"\b({'|'.join(_VALUED)})\b"), lambda m: _VALUED[m[1]]),
    (re.compile(r"\b(?:the )?recipe override (?=\S)"), lambda m: "--set "),
    (re.compile(r"(?<![\w-])width=(?=\d)"), lambda m: "--width "),  # collapse's width (not "delta width 3")
)  # fmt: skip


def to_flags(message: str) -> str:
    """A library message in command-line terms: ``overwrite=True`` → ``--overwrite``, ``chunk_s=30`` →
    ``--chunk-seconds 30``, ``recipe override data.snrs=[0]`` → ``--set data.snrs=[0]``; library functions take
    the parameters the messages name, so they read right in either."""
    for pattern, flag in _FLAGS:
        message = pattern.sub(flag, message)
    return message


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error (library parameters named as flags, see :func:`to_flags`) and exit non-zero."""
    print(displayable(f"error: {one_line(to_flags(message))}"), file=sys.stderr)
    raise SystemExit(code)
