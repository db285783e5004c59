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
