"""Recipes: TOML plus --set overrides, validated with one-line messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechkern.errors import SpeechkernError
from speechkern.recipe import load_recipe, parse_override, validate_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_builtin_recipes_load():
    for name in ("demo", "folder"):
        recipe = load_recipe(RECIPES / name)
        assert recipe.name == name


def test_overrides_are_parsed_as_toml_values():
    assert parse_override("data.snrs=[-5, 0, 5]") == (["data", "snrs"], [-5, 0, 5])
    assert parse_override("data.clean_dir=/some/dir") == (["data", "clean_dir"], "/some/dir")
    assert parse_override("kernel.autotune=true") == (["kernel", "autotune"], True)
    recipe = load_recipe(RECIPES / "demo", ["data.snrs=[-5,5]", "kernel.bandwidth=3.5", "data.clean_dir=x y"])
    assert recipe.data.snrs == [-5.0, 5.0]
    assert recipe.kernel.bandwidth == 3.5
    assert recipe.data.clean_dir == "x y"


def test_unknown_key_names_it_and_the_valid_keys():
    with pytest.raises(SpeechkernError) as err:
        load_recipe(RECIPES / "demo", ["data.snr=0"])
    message = str(err.value)
    assert "data.snr" in message and "snrs" in message and "\n" not in message


def test_a_set_option_with_an_unknown_key_is_blamed_not_the_recipe_file(tmp_path):
    for override, expected in (
        ("data.snr=0", "recipe override data.snr=0: unknown recipe key 'data.snr'; nearest valid keys: data.snrs, "
                       "data.sr, features.sr"),
        ("kernel.epoch=3", "recipe override kernel.epoch=3: unknown recipe key 'kernel.epoch'; nearest valid keys: "
                           "kernel.epochs, dnn.epochs"),
        ("dat.snrs=[0]", "recipe override dat.snrs=[0]: unknown recipe key 'dat.snrs'; nearest valid keys: data.snrs"),
        ("data.bogus=1", "recipe override data.bogus=1: unknown recipe key 'data.bogus'; valid keys in [data]: "
                         "babble_talkers, clean_dir,"),
        ("name.x=1", "recipe override name.x=1: name is a value, not a section; set name itself"),
        ("data.snrs=abc", "recipe override data.snrs=abc: recipe key 'data.snrs' = 'abc': expected a list (a TOML "
                          "list), such as [0.0]"),
    ):  # fmt: skip
        with pytest.raises(SpeechkernError) as err:
            load_recipe(RECIPES / "demo", [override])
        assert str(err.value).startswith(expected) and "recipe.toml" not in str(err.value), str(err.value)
    (tmp_path / "recipe.toml").write_text("[data]\nsnr = [0]\n")  # a key of the file itself: the file is named
    with pytest.raises(SpeechkernError, match=r"recipe.toml: unknown recipe key 'data.snr'; nearest valid keys: "
                                              r"data.snrs"):  # fmt: skip
        load_recipe(tmp_path)


def test_bad_value_names_key_and_value():
    with pytest.raises(SpeechkernError, match=r"kernel.shape.*3"):
        load_recipe(RECIPES / "demo", ["kernel.shape=3"])
    with pytest.raises(SpeechkernError, match="KEY=VALUE"):
        load_recipe(RECIPES / "demo", ["kernel.shape"])


def test_missing_recipe_folder(tmp_path):
    with pytest.raises(SpeechkernError, match="no recipe found"):
        load_recipe(tmp_path / "nothing")


def test_resolved_recipe_round_trips_through_toml(tmp_path):
    recipe = load_recipe(RECIPES / "folder", ["data.clean_dir=/a", "dnn.hidden=[64, 32]"])
    (tmp_path / "recipe.toml").write_text(recipe.to_toml())
    assert load_recipe(tmp_path / "recipe.toml") == recipe
    assert validate_recipe(recipe.model_dump(mode="json")) == recipe


def test_a_recipe_that_is_not_utf8_text_is_one_line(tmp_path):
    (tmp_path / "recipe.toml").write_bytes(b'name = "x"\n\xff\xfe\x00 binary')
    with pytest.raises(SpeechkernError, match="recipe.toml: not a readable UTF-8 text file"):
        load_recipe(tmp_path)
