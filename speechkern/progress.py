"""Progress events from library code, without printing.

The library stays free of terminal output: long loops call :func:`report`, which logs a record on the
``speechkern`` logger carrying a :class:`Progress` in ``record.progress``. The command line installs a logging
handler that turns these records into rich progress bars; any other program sees ordinary log lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("speechkern")


@dataclass(frozen=True)
class Progress:
    """One step of a long task.

    task: stable identifier of the bar (for example ``"features"`` or ``"eigenpro/band-2"``).
    completed: steps done so far; total: steps in all, or None when unknown.
    description: short human label; info: extra numbers shown beside the bar (loss, seconds, ...).
    milestone: a step worth a line in every log (an epoch), not just a tick of a bar.
    """

    task: str
    completed: float
    total: float | None = None
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    milestone: bool = False


def report(
    task: str,
    completed: float,
    total: float | None = None,
    description: str = "",
    *,
    done: bool = False,
    milestone: bool = False,
    log: logging.Logger | None = None,
    **info: Any,
) -> None:
    """Log a progress event (INFO level) that a front end may show as a progress bar."""
    event = Progress(task, completed, total, description or task, dict(info), done, milestone)
    details = " ".join(f"{k}={_fmt(v)}" for k, v in info.items())
    where = f"{completed:g}/{total:g}" if total else f"{completed:g}"
    (log or logger).info(
        "%s %s%s", event.description, where, f" {details}" if details else "", extra={"progress": event}
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` above (e.g. ``4:05``, ``1:02:09``); negative values count as 0."""
    total = int(round(max(0.0, seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressTracker:
    """The state of one task seen through its :class:`Progress` events: how far, how fast, how long to go.

    The rate is measured from the first event seen (or the last restart: a task whose ``completed`` goes back
    starts again), so the estimate needs two events with progress between them. Times are in seconds of any
    monotonic clock (``time.monotonic()``), passed in so that the arithmetic is testable.
    """

    def __init__(self, now: float) -> None:
        self.event: Progress | None = None
        self.start_time = now
        self.start_completed = 0.0
        self.updated = now

    def update(self, event: Progress, now: float) -> None:
        """Record ``event``, received at time ``now``."""
        previous = self.event
        if previous is None or event.completed < previous.completed or (self.finished and not event.done):
            self.start_time, self.start_completed = now, event.completed
        self.event, self.updated = event, now

    @property
    def finished(self) -> bool:
        """The task said it is done, or reached its total."""
        e = self.event
        return e is not None and (e.done or (e.total is not None and e.completed >= e.total))

    def eta(self, now: float) -> float | None:
        """Seconds left at time ``now``, or None where unknown (no total, no progress measured yet, or done)."""
        e = self.event
        if e is None or e.total is None or self.finished:
            return None
        done = e.completed - self.start_completed
        spent = self.updated - self.start_time
        if done <= 0 or spent <= 0:
            return None
        left_at_update = (e.total - e.completed) * spent / done
        return max(0.0, left_at_update - (now - self.updated))

    def describe(self, now: float) -> str:
        """One line: what, how far (with the percentage when the total is known), the extra numbers, the ETA."""
        e = self.event
        if e is None:
            return ""
        where = (
            f"{_count(e.completed)}/{_count(e.total)} ({100 * e.completed / e.total:.0f}%)"
            if e.total
            else _count(e.completed)
        )
        parts = [e.description or e.task, where, *(f"{k} {_fmt(v)}" for k, v in e.info.items())]
        if self.finished:
            parts.append("done")
        else:
            eta = self.eta(now)
            parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA unknown")
        return "  ".join(parts)


def _count(value: float) -> str:
    """Steps as an integer where whole (``3``), else with two decimals (``3.42`` of an epoch)."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
