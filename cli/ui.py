"""Terminal side of the library's logging: progress bars from progress events, a log file, one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from speechkern.progress import Progress as ProgressEvent

console = Console(stderr=True)


class _ProgressHandler(logging.Handler):
    """Turns ``speechkern`` progress records into rich bars; other records of WARNING and above are printed."""

    def __init__(self, bars: Progress) -> None:
        super().__init__(logging.INFO)
        self.bars = bars
        self.tasks: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event: ProgressEvent | None = getattr(record, "progress", None)
        if event is None:
            if record.levelno >= logging.WARNING:
                self.bars.console.print(f"[yellow]{record.levelname.lower()}:[/] {record.getMessage()}")
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


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def progress_ui(log_file: Path | None = None, quiet: bool = False) -> Iterator[Progress]:
    """Show the library's progress events as bars while the block runs; also log everything to ``log_file``."""
    root = logging.getLogger("speechkern")
    root.setLevel(logging.INFO)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=False,
    )
    handlers: list[logging.Handler] = [_ProgressHandler(bars)]
    if log_file is not None:
        # delay: the file is opened at the first record, after the library has created (or refused) its folder
        file_handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        file_handler.addFilter(_ThrottleProgress())
        handlers.append(file_handler)
    for handler in handlers:
        root.addHandler(handler)
    started = time.perf_counter()
    try:
        with bars:
            yield bars
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.debug("finished in %.1f s", time.perf_counter() - started)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit with a non-zero code."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
