"""Progress without a terminal: lines on stderr saying what, how far and how long to go, at least every N
seconds; results on stdout; long paths and commands never wrapped."""

from __future__ import annotations

import logging
import re
import time

import pytest

from speechkern.progress import Progress, ProgressTracker, format_duration, report
from speechkern_cli import ui


@pytest.mark.parametrize(
    "seconds, text", [(0, "0:00"), (59.4, "0:59"), (61, "1:01"), (3599, "59:59"), (3723, "1:02:03"), (-5, "0:00")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_tracker_estimates_the_time_left_from_the_measured_rate():
    tracker = ProgressTracker(now=100.0)
    tracker.update(Progress("features", 1, 10, "features"), now=100.0)
    assert tracker.eta(100.0) is None  # one event: no rate yet
    tracker.update(Progress("features", 3, 10, "features", {"file": "a.wav"}), now=110.0)
    # 2 steps in 10 s, 7 to go: 35 s at the last event, 30 s five seconds later
    assert tracker.eta(110.0) == pytest.approx(35.0)
    assert tracker.eta(115.0) == pytest.approx(30.0)
    line = tracker.describe(110.0)
    assert line == "features  3/10 (30%)  file a.wav  ETA 0:35"
    tracker.update(Progress("features", 10, 10, "features"), now=130.0)
    assert tracker.finished and tracker.eta(130.0) is None and tracker.describe(130.0).endswith("done")


def test_tracker_restarts_when_a_task_starts_again():
    tracker = ProgressTracker(now=0.0)
    tracker.update(Progress("eigenpro/band-1", 1, 3), now=0.0)
    tracker.update(Progress("eigenpro/band-1", 3, 3, done=True), now=100.0)
    tracker.update(Progress("eigenpro/band-1", 1, 3), now=200.0)  # the next fit reuses the task name
    tracker.update(Progress("eigenpro/band-1", 2, 3), now=201.0)
    assert not tracker.finished and tracker.eta(201.0) == pytest.approx(1.0)
    tracker.update(Progress("eigenpro/band-1", 1.5, 3), now=202.0)  # a fraction of an epoch
    assert "1.50/3 (50%)" in tracker.describe(202.0)


def test_tracker_without_a_total_reports_the_count():
    tracker = ProgressTracker(now=0.0)
    tracker.update(Progress("autotune", 4, None, "autotune evaluations", {"gamma": 1.0}), now=1.0)
    assert tracker.describe(1.0) == "autotune evaluations  4  gamma 1  ETA unknown"


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_progress_lines_without_a_terminal_and_a_heartbeat(capsys):
    """capsys is not a terminal: events become lines on stderr; a silent stretch still gets a line per period."""
    every = 0.25
    with ui.progress_ui(every_s=every):
        report("features", 1, 4, "features")  # task start: a line
        report("features", 2, 4, "features")  # too soon after the last: no line
        time.sleep(4.5 * every)  # the library is silent: the heartbeat repeats the newest state
        report("features", 4, 4, "features")  # task end: a line
        logging.getLogger("speechkern.test").warning("disk %s nearly full", "/tmp")
    captured = capsys.readouterr()
    assert captured.out == ""  # progress never mixes with results
    lines = _lines(captured.err)
    assert re.fullmatch(r"\[0:00\] features  1/4 \(25%\)  ETA unknown", lines[0]), lines
    beats = [line for line in lines[1:] if "2/4 (50%)" in line]
    assert len(beats) >= 3, lines  # about one per period while silent
    assert all("ETA 0:" in line for line in beats), beats
    assert any(line.endswith("features  4/4 (100%)  done") for line in lines), lines
    assert lines[-1] == "warning: disk /tmp nearly full"


def test_heartbeat_keeps_a_silent_job_log_alive(capsys):
    """However long a step takes without events, a line appears at least every period."""
    every = 0.2
    with ui.progress_ui(every_s=every):
        report("train/all", 0, 3, "fits for all", milestone=True)
        started = time.monotonic()
        stamps = []
        while time.monotonic() - started < 6 * every:
            time.sleep(every / 10)
            err = capsys.readouterr().err
            stamps += [time.monotonic()] * len(_lines(err))
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert len(stamps) >= 4 and max(gaps) < 2 * every, gaps


def test_quiet_keeps_warnings_only(capsys):
    with ui.progress_ui(quiet=True, every_s=0.05):
        report("features", 1, 2, "features")
        time.sleep(0.2)
        logging.getLogger("speechkern").warning("something to know")
    err = capsys.readouterr().err
    assert _lines(err) == ["warning: something to know"]


def test_long_paths_and_commands_are_not_wrapped(capsys):
    """Rich wraps at 80 columns when not on a terminal; the command line's consoles do not."""
    path = "/data/" + "/".join(f"folder-{i:02d}" for i in range(20)) + "/run"
    hint = f"next: speechkern evaluate {path}   |   speechkern enhance NOISY.wav --model {path}"
    ui.console.print(hint)
    ui.stdout.print(f"{path}/a.wav → {path}/a_enhanced.wav  (1.0 s, 1 ch, 16000 Hz)")
    captured = capsys.readouterr()
    assert _lines(captured.err) == [
        f"next: speechkern evaluate {path}   |   speechkern enhance NOISY.wav --model {path}"
    ]
    assert _lines(captured.out) == [f"{path}/a.wav → {path}/a_enhanced.wav  (1.0 s, 1 ch, 16000 Hz)"]


def test_tables_in_a_pipe_keep_long_titles_and_cells_whole(capsys):
    from rich.table import Table

    path = "/data/" + "/".join(f"folder-{i:02d}" for i in range(20)) + "/run"
    table = Table(title=f"trained into {path}")
    for column in ("model", "fit minutes", "autotune minutes", "validation MSE"):
        table.add_column(column)
    table.add_row("kernel", "2.32", "21.73", "0.03766")
    ui.stdout.print(table)
    lines = _lines(capsys.readouterr().out)
    assert lines[0].strip() == f"trained into {path}"
    assert any("fit minutes" in line and "autotune minutes" in line for line in lines)
