"""`speechkern train --ray` as a newcomer types it: into a run directory that does not exist yet, or over one that
does (--overwrite). The executor logs as it starts (Ray's resources), before the run directory is made."""

from __future__ import annotations

import logging

import pytest
from conftest import RECIPES, run_cli

from speechkern.errors import SpeechkernError


@pytest.fixture
def logging_executor(monkeypatch):
    """make_executor as Ray's: it logs while it starts; training stops at once (a clear error) once it has one."""
    from speechkern import parallel, pipeline

    def make_executor(*args, **kwargs):
        logging.getLogger("speechkern.parallel").info("Ray: 2 CPUs, 0 GPUs")
        return parallel.SerialExecutor()

    def train(recipe, run_dir, **kwargs):
        pipeline.open_run(recipe, run_dir, resume=kwargs["resume"], overwrite=kwargs["overwrite"])
        logging.getLogger("speechkern.pipeline").info("run %s: started", run_dir)
        raise SpeechkernError("stopped here by the test")

    monkeypatch.setattr(parallel, "make_executor", make_executor)
    monkeypatch.setattr(pipeline, "train", train)


def test_train_with_ray_into_a_new_run_directory(tmp_path, capsys, logging_executor):
    run = tmp_path / "runs" / "fresh"
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--ray", "-o", str(run), "-q"], capsys)
    assert code == 2 and err.strip().splitlines() == ["error: stopped here by the test"], err
    assert "started" in (run / "train.log").read_text()


def test_train_with_ray_over_an_existing_run_keeps_its_log(tmp_path, capsys, logging_executor):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("the old run's log\n")
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--ray", "-o", str(run), "--overwrite", "-q"], capsys)
    assert code == 2 and "stopped here by the test" in err, err
    log = (run / "train.log").read_text()  # the new run's log, in the new run directory
    assert "started" in log and "old run" not in log


def test_train_with_ray_keeps_the_command_line_s_sigterm_handling(tmp_path, capsys, monkeypatch):
    """Ray installs its own SIGTERM handler as it starts (it aborts the process with a stack dump): `kill` and
    `timeout` must still interrupt training as Ctrl-C does (a line saying how to resume), so the handler the
    command line had is put back while training."""
    import signal

    from speechkern import parallel, pipeline

    def ours(signum, frame):
        raise KeyboardInterrupt

    def rays(signum, frame):
        raise AssertionError("Ray's handler")

    seen = []

    def make_executor(*args, **kwargs):
        signal.signal(signal.SIGTERM, rays)
        return parallel.SerialExecutor()

    def train(recipe, run_dir, **kwargs):
        seen.append(signal.getsignal(signal.SIGTERM))
        raise SpeechkernError("stopped here by the test")

    monkeypatch.setattr(parallel, "make_executor", make_executor)
    monkeypatch.setattr(pipeline, "train", train)
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        code, _, err = run_cli(["train", str(RECIPES / "demo"), "--ray", "-o", str(tmp_path / "run"), "-q"], capsys)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 2 and "stopped here" in err
    assert seen == [ours]


def test_gpus_per_task_without_ray_is_refused_not_ignored(tmp_path, capsys, logging_executor):
    """--gpus-per-task on a local run (no --ray, no --ray-address) was silently ignored: it only sizes Ray tasks."""
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--out", str(run), "--gpus-per-task", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and not run.exists(), err
    assert err.startswith("error: --gpus-per-task 1: applies to Ray tasks only; add --ray"), err


def test_a_ray_address_where_nothing_answers_is_refused_at_once(tmp_path, capsys, monkeypatch):
    """`speechkern train --ray-address 127.0.0.1:1` (a typo, or a head node not started) hung for more than five
    minutes in ray.init, printing Ray's log lines ("Failed to get cluster ID from GCS server: TimedOut")."""
    import socket
    import time

    from speechkern import parallel

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr("ray.init", lambda **kw: pytest.fail("ray.init was reached"))
    started = time.monotonic()
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--ray-address", f"127.0.0.1:{port}", "--out",
                            str(tmp_path / "run"), "-q"], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: Ray cluster at '127.0.0.1:{port}': nothing answers there (")
    assert err.rstrip().endswith("start the cluster's head node first, or check --ray-address"), err
    assert time.monotonic() - started < parallel.PROBE_SECONDS + 5 and not (tmp_path / "run").exists()
    parallel.check_reachable("auto")  # forms other than HOST:PORT are Ray's to read
    parallel.check_reachable("ray://head:10001")
