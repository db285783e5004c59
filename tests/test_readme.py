"""The README and the recipes' READMEs say what the code does."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.parent.name for p in (ROOT / "recipes").glob("*/recipe.toml"))


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_a_readme_with_its_run_command(name):
    readme = ROOT / "recipes" / name / "README.md"
    assert readme.is_file(), f"recipes/{name} has no README.md"
    text = readme.read_text()
    assert f"speechkern train recipes/{name}" in text


def test_readme_states_the_device_defaults_the_commands_have():
    import typer

    from speechkern.recipe import TrainConfig
    from speechkern_cli.main import app

    root = typer.main.get_command(app)
    ctx = root.make_context("speechkern", ["--help"], resilient_parsing=True)
    device = {name: next(p for p in root.get_command(ctx, name).params if p.name == "device").default
              for name in ("train", "evaluate", "enhance")}  # fmt: skip
    assert device == {"train": None, "evaluate": "cpu", "enhance": "cpu"}  # train: None = the recipe's
    assert TrainConfig().device == "auto"
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "`train` uses the recipe's `train.device`, which is `auto`" in text
    assert "`evaluate` and `enhance` use `cpu`" in text


def test_the_readme_lists_every_recipe():
    """The README's list of recipes ("Recipes live in recipes/<name>/recipe.toml (...)") left out recipes/general,
    the recipe of the shipped model."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("Recipes live in"))
    listed = line.split("(", 1)[1].split(")", 1)[0]
    assert [name for name in RECIPES if f"`{name}`" not in listed] == []
