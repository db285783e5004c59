"""Shared test fixtures: the development audio, a private KeOps cache, small deterministic signals."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# KeOps reads its cache folder when imported: give the test run a private one before any test imports it.
os.environ.setdefault("KEOPS_CACHE_FOLDER", tempfile.mkdtemp(prefix="speechkern-keops-"))

DEV_DATA = Path(
    os.environ.get("SPEECHKERN_DEV_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
)


@pytest.fixture(scope="session")
def dev_data() -> Path:
    """The real development audio (../shared/data/dev); tests that need it skip where it is absent."""
    if not (DEV_DATA / "clean").is_dir():
        pytest.skip(
            f"development audio not found at {DEV_DATA} "
            "(expected ../shared/data/dev beside the checkout, or SPEECHKERN_DEV_DATA=DIR)"
        )
    return DEV_DATA


RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# A demo run small enough to train in seconds: used by the pipeline, report and enhance tests.
TINY = [
    "data.n_train=6", "data.n_val=2", "data.n_test=2", "data.generated_noise_s=20", "data.max_utterance_s=3",
    "features.context=1", "kernel.subbands=2", "kernel.epochs=2", "dnn.hidden=[32]", "dnn.epochs=2",
    "train.max_train_frames=600", "train.max_val_frames=200", "train.workers=1", "evaluate.examples=1",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """(recipe, root, summary) of a tiny demo run trained into ``root/run`` with its cache in ``root/cache``."""
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    root = tmp_path_factory.mktemp("pipeline")
    recipe = load_recipe(RECIPES / "demo", TINY)
    summary = train(recipe, root / "run", cache_dir=root / "cache", models=["kernel", "dnn"])
    return recipe, root, summary


@pytest.fixture(scope="session")
def tiny_report(tiny_run):
    """(evaluation, report folder) of the tiny run."""
    from speechkern.evaluate import evaluate
    from speechkern.report import write_report

    _, root, _ = tiny_run
    ev = evaluate(root / "run", workers=1, cache_dir=root / "cache", examples=1)
    return ev, write_report(ev, root / "run")


@pytest.fixture
def one_thread():
    """torch on one thread for the test: small networks train fastest so, and Ray's one-thread workers round alike."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``speechkern ARGV`` in this process: (exit code, stdout, stderr)."""
    from speechkern_cli.main import main

    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err
