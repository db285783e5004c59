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
