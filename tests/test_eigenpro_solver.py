"""The choice of solver: the local machine by default (one leaf, the exact solve, when the frames fit), and between
EigenPro 2 and EigenPro 3 with their number of centres, from the data size and the budget."""

from __future__ import annotations

import pytest

from speechkern.eigenpro.solver import AUTO_GLOBAL_CENTERS, DEFAULT_LEAF_SIZE, MAX_CENTRES, choose_solver
from speechkern.errors import SpeechkernError

GIB = 2**30


def test_the_default_is_the_local_machine_with_leaves_that_fit():
    small = choose_solver(20_000, 5_000, 256, 4 * GIB)
    assert small.solver == "local" and small.leaf_size == 20_000 and "exact ridge solve of all 20000" in small.reason
    big = choose_solver(348_162, 5_000, 256, 4 * GIB)
    assert big.solver == "local" and "32 leaves of about 10881 frames" in big.reason
    tight = choose_solver(348_162, 5_000, 256, GIB // 2)  # float32 K of a leaf within 80 % of the budget
    assert 4 * tight.leaf_size**2 <= 0.8 * GIB // 2 < 4 * (tight.leaf_size + 2) ** 2 and "memory budget" in tight.reason
    assert choose_solver(50_000, 0, 256, 4 * GIB, "local", leaf_size=5000).leaf_size == 5000
    compact = choose_solver(50_000, 0, 256, 4 * GIB, "local", leaf_size=5000, leaf_centers=1000)
    assert compact.leaf_size == 5000 and "keeping 1000 centres per leaf" in compact.reason
    assert "keeping" not in choose_solver(50_000, 0, 256, 4 * GIB, "local", leaf_size=5000, leaf_centers=9000).reason
    assert "the mean of 3 such trees" in choose_solver(50_000, 0, 256, 4 * GIB, leaf_size=5000, trees=3).reason
    assert "trees" not in choose_solver(5_000, 0, 256, 4 * GIB, trees=3).reason  # one leaf: one tree
    # By default three trees where the tree has 2 to 8 leaves, one beyond (and one where asked)
    assert [choose_solver(n, 0, 256, 4 * GIB).trees for n in (20_000, 40_000, 160_000, 160_001)] == [1, 3, 3, 1]
    assert choose_solver(40_000, 0, 256, 4 * GIB, trees=1).trees == 1
    assert choose_solver(40_000, 0, 2, 4 * GIB).trees == 2  # one tree per principal direction of 2 features
    assert choose_solver(50_000, 0, 256, 4 * GIB, "eigenpro").trees == 1
    assert choose_solver(30_000, 0, 256, 8 * GIB, "exact").leaf_size == 30_000
    # Every frame in one exact solve wherever its float32 K fits the budget and LAPACK's 40 000 points
    whole = choose_solver(40_000, 0, 256, 6 * GIB)
    assert whole.leaf_size == 40_000 and whole.trees == 1 and "every frame fits one exact solve" in whole.reason
    assert choose_solver(30_000, 0, 256, 4 * GIB).leaf_size == 30_000  # 3.4 GiB: above 80 %, within the budget
    assert choose_solver(40_001, 0, 256, 64 * GIB).leaf_size == DEFAULT_LEAF_SIZE  # beyond LAPACK: leaves
    # A global machine under the leaves by default wherever there are leaves; none with one leaf or where asked
    assert choose_solver(348_162, 0, 256, 4 * GIB).global_centers == AUTO_GLOBAL_CENTERS
    assert "4000 centres, fitted to every frame" in choose_solver(348_162, 0, 256, 4 * GIB).reason
    assert "4000 centres, fitted to 400000 of the frames" in choose_solver(500_000, 0, 256, 4 * GIB).reason
    assert choose_solver(20_000, 0, 256, 4 * GIB).global_centers == 0
    assert choose_solver(50_000, 0, 256, 4 * GIB, global_centers=0).global_centers == 0
    assert choose_solver(3000, 0, 256, 4 * GIB, leaf_size=1000, global_centers=9000).global_centers == 3000
    with pytest.raises(SpeechkernError, match="solver='local'"):
        choose_solver(50_000, 0, 256, 64 * GIB, "exact")


def test_small_problems_use_every_frame_as_a_centre():
    choice = choose_solver(20_000, 5_000, 1230, 4 * GIB, "eigenpro")
    assert choice.solver == "eigenpro2" and choice.centers is None
    assert "EigenPro 2" in choice.reason and "20000 frames" in choice.reason


def test_large_problems_use_as_many_centres_as_the_memory_allows():
    choice = choose_solver(300_000, 5_000, 1230, 4 * GIB, "eigenpro")
    assert choice.solver == "eigenpro3"
    p = choice.centers
    # float16 K(X, Z), K(X_val, Z) and their distances plus the p × p factors within 80 % of the budget, not less
    used = 4 * 305_000 * p + 20 * p * p
    assert used <= 0.8 * 4 * GIB < 4 * 305_000 * (p + 2) + 20 * (p + 2) ** 2
    assert "memory budget" in choice.reason and "300000 frames" in choice.reason
    # a roomier budget gives more centres, never more than the cap
    assert choose_solver(300_000, 5_000, 1230, 64 * GIB, "eigenpro").centers == MAX_CENTRES
    # the build work caps p when memory does not: n·p·features ≤ 4·10¹²
    many = choose_solver(2_000_000, 0, 1230, 1024 * GIB, "eigenpro")
    assert 2_000_000 * many.centers * 1230 <= 4e12 and "build-work" in many.reason


def test_choices_can_be_forced():
    assert choose_solver(300_000, 0, 1230, 4 * GIB, "eigenpro2").solver == "eigenpro2"
    forced = choose_solver(10_000, 0, 1230, 4 * GIB, "eigenpro3")
    assert forced.solver == "eigenpro3" and 1 <= forced.centers <= 10_000
    assert choose_solver(300_000, 0, 1230, 4 * GIB, "auto", 3000).centers == 3000
    assert choose_solver(2_000, 0, 1230, 4 * GIB, "auto", 3000).solver == "eigenpro2"  # p ≥ n: every frame
    with pytest.raises(SpeechkernError, match="kernel.solver='fast'"):
        choose_solver(1000, 0, 10, GIB, "fast")


def test_the_pipeline_logs_and_follows_the_recipe(caplog):
    import logging

    import numpy as np

    from speechkern.pipeline import TrainingSet, kernel_solver
    from speechkern.recipe import Recipe

    rng = np.random.default_rng(0)
    data = TrainingSet("all", rng.standard_normal((3000, 20)), rng.random((3000, 8)), rng.standard_normal((300, 20)),
                       rng.random((300, 8)), None)  # fmt: skip
    recipe = Recipe()
    assert recipe.train.max_train_frames == 0 and recipe.kernel.solver == "auto"  # every frame by default
    with caplog.at_level(logging.INFO, logger="speechkern"):
        assert kernel_solver(recipe, data, "cpu").solver == "local"
    assert any("exact ridge solve of all 3000 frames" in r.getMessage() for r in caplog.records)
    eigenpro = Recipe.model_validate({"kernel": {"solver": "eigenpro"}})
    with caplog.at_level(logging.INFO, logger="speechkern"):
        assert kernel_solver(eigenpro, data, "cpu").solver == "eigenpro2"
    assert any("EigenPro 2 with every one of 3000 frames" in r.getMessage() for r in caplog.records)
    small = Recipe.model_validate({"kernel": {"solver": "eigenpro", "memory_gb": 0.01}})  # K(X, X) over 10 MiB
    choice = kernel_solver(small, data, "cpu")
    assert choice.solver == "eigenpro3" and 1 <= choice.centers < 3000
    forced = Recipe.model_validate({"kernel": {"solver": "eigenpro3", "centers": 120}})
    assert kernel_solver(forced, data, "cpu").centers == 120


def test_more_centres_than_frames_is_named_as_the_reason():
    """kernel.centers = 5000 with 600 frames logged 'EigenPro 2 with every one of 600 frames as a centre (as
    asked)', which was not what was asked."""
    choice = choose_solver(600, 200, 64, 4 * GIB, centers=5000)
    assert choice.solver == "eigenpro2"
    assert choice.reason.endswith("(kernel.centers = 5000 asks for at least as many)"), choice.reason
    assert choose_solver(600, 200, 64, 4 * GIB, "eigenpro2").reason.endswith("as a centre (as asked)")


def test_an_exact_solve_beyond_the_budget_names_the_recipe_key():
    """kernel.memory_gb too small for an exact solve was refused naming only the estimator's memory_budget_gb."""
    with pytest.raises(SpeechkernError, match=r"raise memory_budget_gb \(kernel.memory_gb in a recipe\), use solver"):
        choose_solver(20_000, 0, 64, GIB // 4, "exact")
