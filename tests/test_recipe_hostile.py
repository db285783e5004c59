"""Recipes under hostile values: every value that would crash a run deep inside (an overflow in joblib or torch,
a float32 overflow, a division by zero in the mixing) or be taken silently for something else (true for a
number, a section written as a value) stops when the recipe loads, in one line naming the key and what to do."""

from __future__ import annotations

import pytest
from conftest import RECIPES, run_cli

from speechkern.errors import SpeechkernError
from speechkern.recipe import load_recipe

HUGE = "99999999999999999999999"


def _refused(overrides: list[str], *fragments: str) -> str:
    with pytest.raises(SpeechkernError) as err:
        load_recipe(RECIPES / "demo", overrides)
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


@pytest.mark.parametrize(
    "override",
    ["kernel.subbands=true", "kernel.bandwidth=false", "train.max_train_frames=true", "dnn.hidden=[64, true]",
     "kernel.gammas=[true]", "data.snrs=[false]", "features.context=true", "kernel.epochs=true"],
)  # fmt: skip
def test_true_or_false_for_a_number_is_refused_not_read_as_1_or_0(override):
    key = override.split("=")[0]
    _refused([override], f"recipe override {override}", key, "true or false", "number")


@pytest.mark.parametrize(
    "override, shown",
    [("kernel.autotune=yes", '"yes"'), ("kernel.autotune=1", "1"), ("kernel.autotune=0", "0"),
     ('kernel.autotune="false"', '"false"'), ("features.deltas=on", '"on"'), ("kernel.rfm_diagonal=off", '"off"')],
)  # fmt: skip
def test_a_switch_takes_only_true_or_false(override, shown):
    """kernel.autotune=yes or =1 was read as true, and =0 or "false" (quoted) as false, through pydantic's lenient
    booleans: a typo or a number passed for a choice. Every switch of a recipe takes true or false only."""
    key = override.split("=")[0]
    _refused([override], f"recipe override {override}: recipe key {key}: {shown} is not true or false; write true "
             "or false (without quotes)")  # fmt: skip


def test_a_switch_in_the_file_takes_only_true_or_false(tmp_path, capsys):
    (tmp_path / "recipe.toml").write_text('[features]\ndeltas = "no"\n')
    with pytest.raises(SpeechkernError, match=r'recipe.toml: recipe key features.deltas: "no" is not true or false'):
        load_recipe(tmp_path)
    recipe = load_recipe(
        RECIPES / "demo", ["kernel.autotune=false", "features.deltas=false", "kernel.rfm_diagonal=true"]
    )
    assert (recipe.kernel.autotune, recipe.features.deltas, recipe.kernel.rfm_diagonal) == (False, False, True)
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--set", "kernel.autotune=yes", "--out",
                            str(tmp_path / "run")], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--set kernel.autotune=yes: " in err, err
    assert not (tmp_path / "run").exists()


def test_true_or_false_for_a_number_in_the_file_names_the_file(tmp_path):
    (tmp_path / "recipe.toml").write_text("[kernel]\nepochs = true\n")
    with pytest.raises(SpeechkernError, match=r"recipe.toml: recipe key kernel.epochs: true .*number"):
        load_recipe(tmp_path)


@pytest.mark.parametrize(
    "override",
    [f"train.workers={HUGE}", f"dnn.batch_size={HUGE}", f"dnn.hidden=[{HUGE}]", f"data.seed={HUGE}",
     "kernel.epochs=1e15", f"kernel.centers='{HUGE}'", f"kernel.rfm_agop_frames={2**31}"],
)  # fmt: skip
def test_integers_beyond_what_the_engine_takes_are_refused(override):
    """Each crashed with OverflowError in joblib's semaphore or torch's C++ side, after the run had started."""
    key = override.split("=")[0]
    _refused([override], key, str(2**31 - 1))


@pytest.mark.parametrize("override", ["kernel.eigenpro_ridge=1e300", "dnn.learning_rate=1e39", "kernel.ridges=[1e300]"])
def test_floats_beyond_float32_are_refused(override):
    """eigenpro_ridge=1e300 and learning_rate=1e300 crashed in torch: 'value cannot be converted to type float'."""
    _refused([override], override.split("=")[0], "3.4e+38")


@pytest.mark.parametrize("override", ["data.snrs=[1e300]", "data.snrs=[-1e30]", "data.conditions=['ssn@1e300']"])
def test_snrs_beyond_100_db_are_refused(override):
    """1e300 dB overflowed 10**(snr/10); -1e30 dB divided by zero when the noise gain was set."""
    _refused([override], override.split("=")[0], "100")


def test_a_negative_seed_is_refused():
    """NumPy's SeedSequence crashed on it ('expected non-negative integer') when the demo corpus was drawn."""
    _refused(["data.seed=-1"], "data.seed", "-1")


def test_values_at_the_limits_still_load():
    recipe = load_recipe(RECIPES / "demo", [f"data.seed={2**31 - 1}", "kernel.bandwidth=1e30", "data.snrs=[-100, 100]",
                                            "dnn.learning_rate=1e-300", "kernel.autotune=true", "target.lc=-5.0",
                                            "data.conditions=['ssn@-100']"])  # fmt: skip
    assert recipe.data.seed == 2**31 - 1 and recipe.data.snrs == [-100.0, 100.0] and recipe.kernel.autotune is True


def test_an_utterance_cut_shorter_than_a_tenth_of_a_second_is_refused():
    """1e-300 s cut every utterance to nothing, and the run stopped with 'the clean speech is silent'."""
    _refused(["data.max_utterance_s=1e-300"], "data.max_utterance_s", "0.1")


def test_a_context_too_wide_to_train_is_refused_at_load(monkeypatch):
    """features.context=100000 (49 million inputs per frame) loaded, and training ran out of memory."""
    import speechkern.recipe as recipe_module

    monkeypatch.setattr(recipe_module, "memory_budget", lambda: 8 * 2**30)  # the same on every machine
    _refused(["features.context=100000"], "features.context", "49200246 inputs per frame")
    assert load_recipe(RECIPES / "demo", ["features.context=50"]).features.context == 50  # 24 846 inputs: trains


def test_an_empty_recipe_file_is_refused(tmp_path):
    """An empty (or comments-only) recipe.toml trained the 120-utterance default experiment without a word."""
    (tmp_path / "recipe.toml").write_text("# nothing yet\n\n")
    with pytest.raises(SpeechkernError, match=r"recipe.toml: holds no settings; .*recipes/demo/recipe.toml"):
        load_recipe(tmp_path)


def test_a_recipe_saved_with_a_byte_order_mark_loads(tmp_path):
    """Windows editors save UTF-8 with a BOM; it was 'not valid TOML (Invalid statement (at line 1, column 1))'."""
    (tmp_path / "recipe.toml").write_bytes("\ufeff[kernel]\nsubbands = 2\n".encode())
    assert load_recipe(tmp_path).kernel.subbands == 2


@pytest.mark.parametrize("text", ["kernel = 3\n", "[[kernel]]\nsubbands = 2\n"])
def test_a_section_written_as_a_value_names_the_section(tmp_path, text):
    (tmp_path / "recipe.toml").write_text(text)
    with pytest.raises(SpeechkernError) as err:
        load_recipe(tmp_path)
    assert "expected a [kernel] section" in str(err.value) and "KernelConfig" not in str(err.value), str(err.value)


def test_the_cli_refuses_a_huge_worker_count_in_one_line_before_any_work(tmp_path, capsys):
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--workers", HUGE, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and "train.workers" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_a_huge_worker_count_in_one_line(tmp_path, capsys):
    """It crashed with OverflowError in joblib's semaphore after loading the run."""
    code, _, err = run_cli(["evaluate", str(tmp_path), "--workers", HUGE], capsys)
    assert code == 2 and err.count("\n") == 1 and f"--workers {HUGE}: expected at most" in err, err


@pytest.mark.parametrize("command", ["mix", "oracle"])
def test_mix_and_oracle_refuse_a_negative_seed(tmp_path, capsys, command):
    """NumPy's SeedSequence crashed on it with a traceback ('expected non-negative integer')."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for name in ("clean", "noise"):
        sf.write(tmp_path / f"{name}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    argv = [command, str(tmp_path / "clean.wav"), str(tmp_path / "noise.wav"), "--snr", "0", "--seed", "-1"]
    code, _, err = run_cli([*argv, "-o", str(tmp_path / "mix.wav")] if command == "mix" else argv, capsys)
    assert code == 2 and "--seed" in err and "Traceback" not in err, err


def test_train_refuses_resume_with_overwrite_and_keeps_the_run(tmp_path, capsys):
    """Both flags together deleted the run (its finished models too) and started again."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text("name = 'kept'\n")
    argv = ["train", str(RECIPES / "demo"), "--out", str(run), "--resume", "--overwrite"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "--resume and --overwrite" in err, err
    assert (run / "recipe.toml").read_text() == "name = 'kept'\n"


@pytest.mark.parametrize("flag", ["--overwrite", "--resume", "--quiet"])
@pytest.mark.parametrize("folder", ["project", "recipe"])
def test_train_never_deletes_or_fills_a_folder_that_is_not_a_run(tmp_path, capsys, flag, folder):
    """--out FOLDER --overwrite deleted any non-empty folder (a project, a recipe folder) with shutil.rmtree;
    --resume trained into it; without either, the refusal said to pass one of them."""
    from conftest import TINY

    out = tmp_path / folder
    out.mkdir()
    files = {"notes.txt": "mine"} if folder == "project" else {"recipe.toml": "name = 'x'\n", "README.md": "# x\n"}
    for name, text in files.items():
        (out / name).write_text(text)
    argv = ["train", str(RECIPES / "demo"), *(f"--set={s}" for s in TINY), "--models", "dnn", "--out", str(out), flag]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "not a run directory" in err, err
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert all((out / name).read_text() == text for name, text in files.items())


@pytest.mark.parametrize("flags", [{"overwrite": True}, {"resume": True}])
def test_the_library_never_deletes_or_fills_a_folder_that_is_not_a_run(tmp_path, flags):
    """pipeline.open_run(overwrite=True), which the library's train calls, still deleted any non-empty folder."""
    from speechkern.pipeline import is_run, open_run

    recipe = load_recipe(RECIPES / "demo")
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SpeechkernError, match=r"project: holds files but is not a run directory"):
        open_run(recipe, out, **flags)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and not is_run(out)
    (out / "models").mkdir()
    (out / "recipe.toml").write_text(recipe.to_toml())
    assert is_run(out)
    open_run(recipe, out, **flags)  # a run is reopened or replaced as asked
    assert (out / "notes.txt").exists() == ("resume" in flags)


def test_evaluate_refuses_a_recipe_folder_without_writing_into_it(tmp_path, capsys):
    """`speechkern evaluate recipes/demo` built manifests/, noises/ and sources/ inside the recipe folder, then said
    to train with --out set to that folder."""
    import shutil

    folder = shutil.copytree(RECIPES / "demo", tmp_path / "demo")
    before = sorted(p.name for p in folder.iterdir())
    code, _, err = run_cli(["evaluate", str(folder), "--workers", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no models/" in err and "speechkern train" in err, err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_evaluate_of_a_run_stopped_before_its_models_says_how_to_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text((RECIPES / "demo" / "recipe.toml").read_text())
    (run / "train.log").write_text("")
    code, _, err = run_cli(["evaluate", str(run)], capsys)
    assert code == 2 and f"--out {run} --resume" in err and sorted(p.name for p in run.iterdir()) == [
        "recipe.toml", "train.log"], err  # fmt: skip


@pytest.mark.parametrize(
    "override, message",
    [("data.snrs=[0, 5, 0.0]", "data.snrs: 0 dB is given twice"), ("data.snrs=[-0.0, 0]", "data.snrs: 0 dB is given"),
     ("data.conditions=['ssn@0', 'ssn@0.0']", "data.conditions: 'ssn@0.0' repeats 'ssn@0'"),
     ("data.noises=['ssn', 'babble', 'ssn']", "data.noises: 'ssn' is given twice")],
)  # fmt: skip
def test_a_repeated_snr_condition_or_noise_is_refused(override, message):
    """data.snrs=[0, 0.0] mixed every test utterance twice under one mixture id (8 manifest rows, 4 ids), so the
    report's per-file tables counted each file twice."""
    _refused([override], message)


def test_evaluate_refuses_an_empty_test_manifest_instead_of_an_empty_report(tiny_run, tmp_path, capsys):
    """An empty manifests/test.jsonl gave exit 0, a report with no rows and a matplotlib warning."""
    import shutil

    _, root, _ = tiny_run
    run = shutil.copytree(root / "run", tmp_path / "run", ignore=shutil.ignore_patterns("report"))
    (run / "manifests" / "test.jsonl").write_text("")
    code, _, err = run_cli(["evaluate", str(run), "--workers", "1", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "test.jsonl: holds 0 mixture rows where the run wrote" in err, err
    assert not (run / "report").exists()
    (run / "manifests" / "index.json").unlink()  # a run from before manifests were recorded
    code, _, err = run_cli(["evaluate", str(run), "--workers", "1", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "test.jsonl: holds no test mixtures" in err, err
    assert not (run / "report").exists()


def test_evaluate_refuses_a_report_path_that_is_a_file_before_scoring(tiny_run, tmp_path, capsys, monkeypatch):
    """A file named report in the run raised FileExistsError after every file had been scored."""
    import shutil

    from speechkern import evaluate

    _, root, _ = tiny_run
    run = shutil.copytree(root / "run", tmp_path / "run", ignore=shutil.ignore_patterns("report"))
    (run / "report").write_text("my notes")
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("scored before the check"))
    code, _, err = run_cli(["evaluate", str(run), "--workers", "1", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "report is a file, not a folder" in err, err
    assert (run / "report").read_text() == "my notes"


def test_the_library_evaluate_writes_nothing_into_a_folder_without_models(tmp_path):
    """evaluate() built manifests/, noises/ and sources/ in a recipe folder before finding it had no models."""
    import shutil

    from speechkern.evaluate import evaluate

    folder = shutil.copytree(RECIPES / "demo", tmp_path / "demo")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(SpeechkernError, match=r"demo: no trained models in models/; train them"):
        evaluate(folder, workers=1)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_settings_without_effect_are_named_in_the_log(tmp_path, caplog):
    """kernel.input_dims with no transform, kernel.centers with the local solver and rfm_agop_frames above
    rfm_frames were accepted and silently did nothing."""
    import logging

    from conftest import TINY

    from speechkern.pipeline import train
    from speechkern.recipe import inert_settings

    assert inert_settings(load_recipe(RECIPES / "demo")) == []
    notes = inert_settings(load_recipe(RECIPES / "demo", ["kernel.input_dims=8", "kernel.solver=local",
                                                          "kernel.centers=50"]))  # fmt: skip
    assert notes == ["kernel.input_dims = 8 has no effect: kernel.input_transform is 'none'",
                     "kernel.centers = 50 has no effect with kernel.solver = 'local' (every frame is a centre; "
                     "kernel.leaf_centers keeps fewer per leaf)"]  # fmt: skip
    rfm = load_recipe(RECIPES / "demo", ["kernel.input_transform=rfm", "kernel.rfm_frames=100",
                                         "kernel.rfm_agop_frames=200"])  # fmt: skip
    assert inert_settings(rfm) == ["kernel.rfm_agop_frames = 200 is capped at kernel.rfm_frames = 100: the gradients "
                                   "are taken on the frames of the fit"]  # fmt: skip
    trees = inert_settings(load_recipe(RECIPES / "demo", ["kernel.trees=2", "kernel.centers=50"]))
    assert trees == ["kernel.trees = 2 has no effect with kernel.solver = 'auto' with kernel.centers = 50: only the "
                     "local solver averages trees"]  # fmt: skip
    assert inert_settings(load_recipe(RECIPES / "demo", ["kernel.trees=2"])) == []
    assert inert_settings(load_recipe(RECIPES / "demo", ["kernel.global_centers=10", "kernel.solver=exact"])) == [
        "kernel.global_centers = 10 has no effect with kernel.solver = 'exact': only the local solver fits a global "
        "machine under its leaves"
    ]
    recipe = load_recipe(RECIPES / "demo", [*TINY, "kernel.solver=local", "kernel.centers=50"])
    with caplog.at_level(logging.WARNING, logger="speechkern"):
        train(recipe, tmp_path / "run", models=["kernel"], cache_dir=None)
    assert "kernel.centers = 50 has no effect with kernel.solver = 'local'" in caplog.text


@pytest.mark.parametrize("value", [1, 2, 99])
def test_a_leaf_of_a_few_frames_is_refused_at_load(value):
    """kernel.leaf_size=1 was accepted: 1500 frames made 1500 one-frame leaves and took 4.7 minutes."""
    _refused([f"kernel.leaf_size={value}"], "kernel.leaf_size", f"{value} frames per leaf", "at least 100")
    assert load_recipe(RECIPES / "demo", ["kernel.leaf_size=100"]).kernel.leaf_size == 100
    assert load_recipe(RECIPES / "demo", ["kernel.leaf_size=0"]).kernel.leaf_size == 0


@pytest.mark.parametrize("key", ["centers", "leaf_centers", "global_centers"])
@pytest.mark.parametrize("value", [1, 2, 9])
def test_a_kernel_machine_of_a_few_centres_is_refused_at_load(key, value):
    """kernel.leaf_centers=1 and kernel.centers=1 were accepted: a machine of one centre per leaf (or one EigenPro 3
    centre) predicts a single kernel bump, no better than the mean mask."""
    _refused([f"kernel.{key}={value}"], f"kernel.{key}", f"{value} centres are too few", "give 0 (", "at least 10")
    for fine in (0, 10, 40):
        assert getattr(load_recipe(RECIPES / "demo", [f"kernel.{key}={fine}"]).kernel, key) == fine
    assert load_recipe(RECIPES / "demo", []).kernel.global_centers == "auto"


def _run_with_recipe(tmp_path, text: str):
    """A run folder (train.log, manifests/, models/) whose recipe.toml holds ``text``."""
    run = tmp_path / "run"
    for sub in ("manifests", "models"):
        (run / sub).mkdir(parents=True)
    (run / "train.log").write_text("")
    (run / "recipe.toml").write_text(text)
    return run


@pytest.mark.parametrize("cut", ["half", "last key", "mid-number"])
def test_a_truncated_run_recipe_is_refused_on_resume_not_read_with_defaults(tmp_path, capsys, cut):
    """A run's recipe.toml cut at a line was read with the defaults for what was lost when the run was resumed
    (`speechkern train RUN/recipe.toml --out RUN --resume`, the command evaluate suggests) and written back so."""
    from speechkern.pipeline import open_run
    from speechkern.recipe import load_run_recipe, with_absolute_paths

    whole = with_absolute_paths(load_recipe(RECIPES / "demo", ["evaluate.examples=12"])).to_toml()
    assert load_run_recipe(_run_with_recipe(tmp_path / "whole", whole)) == load_recipe(tmp_path / "whole" / "run")
    lines = whole.splitlines(keepends=True)
    text = {"half": "".join(lines[: len(lines) // 2]), "last key": "".join(lines[:-1]), "mid-number": whole[:-2]}[cut]
    run = _run_with_recipe(tmp_path, text)
    with pytest.raises(SpeechkernError, match=r"recipe.toml: is cut short \((\[\w+\]|evaluate.examples) is missing|"
                                              r"recipe.toml: is cut short \(its last line is unfinished"):  # fmt: skip
        open_run(load_recipe(run / "recipe.toml"), run, resume=True)
    code, _, err = run_cli(["train", str(run / "recipe.toml"), "--out", str(run), "--resume", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "recipe.toml: is cut short" in err and "--overwrite" in err, err
    assert (run / "recipe.toml").read_text() == text  # not written back with defaults


def test_evaluate_says_the_recipe_is_unreadable_before_asking_for_overwrite(tmp_path, capsys):
    """With a report in the run, evaluate asked for --overwrite; with --overwrite it then said recipe.toml was
    unreadable: the real problem comes first."""
    for text, said in (("garbage [[\n", "recipe.toml: not valid TOML"), ("[data]\nsr = 16000\n", "is cut short")):
        run = _run_with_recipe(tmp_path / str(len(text)), text)
        (run / "report").mkdir()
        (run / "report" / "index.html").write_text("<html></html>")
        code, _, err = run_cli(["evaluate", str(run), "-q"], capsys)
        assert code == 2 and err.count("\n") == 1 and said in err and "a report exists" not in err, err


@pytest.mark.parametrize(
    "override, says",
    [("features.hop_length=4000", "hop_length = 4000 is not below frame_length = 320: frames must overlap"),
     ("features.frame_length=2", "hop_length = 160 is not below frame_length = 2"),
     ("features.n_fft=64", "n_fft = 64 is shorter than frame_length = 320")],
)  # fmt: skip
def test_a_features_key_that_breaks_a_rule_of_its_section_is_named_with_its_override(override, says):
    """features.hop_length=4000 trained a model that enhance and evaluate then refused ("mask interpolation needs
    overlapping frames"); and a rule across the features keys named the recipe file and the whole [features]
    table, not the key given on the command line."""
    key, value = override.split("=")
    _refused([override], f"recipe override {override}: recipe key '{key}' = {value}: {says}")


@pytest.mark.parametrize(
    "override, says",
    [("features.sr=8000", "sr = 8000 Hz puts the Nyquist frequency at 4000 Hz, below the gammatone filterbank's "
                          "fmax = 8000 Hz; give fmax = 4000 or less"),
     ("features.fmin=9000", "fmin = 9000 Hz is not below fmax = 8000 Hz"),
     ("features.sr=48000", "ams_frame_length = 512 at sr = 48000 Hz gives envelope spectra of 46.875 Hz bins"),
     ("features.hop_length=161", "hop_length = 161 is not a multiple of ams_decimation = 4"),
     ("features.ams_frame_length=100", "ams_frame_length = 100 is not a multiple of twice"),
     ("features.ams_fmax=3000", "ams_fmax = 3000 Hz is above the envelope's Nyquist frequency, 2000 Hz"),
     ("features.ams_fmin=500", "ams_fmin = 500 Hz is not below ams_fmax = 400 Hz"),
     ("features.ams_bands=4", "ams_bands = 4: the toolbox's modulation filters are 15 bands"),
     ("features.plp_order=40", "plp_order = 40 needs more Bark bands than sr = 16000 Hz audio gives (21)")],
)  # fmt: skip
def test_every_features_rule_names_the_key_given_not_the_whole_table(override, says):
    """features.sr=8000 was refused with the whole [features] table ("recipe key 'features' = {'kind': ..., 'sr':
    8000}: gammatone range ...") and no word of what to set; so were the AMS and PLP rules across keys."""
    key, value = override.split("=")
    message = _refused([override], f"recipe override {override}: recipe key '{key}' = {value}: {says}")
    assert "{" not in message, message


def test_a_memory_budget_too_small_for_any_leaf_is_refused_at_load():
    """kernel.memory_gb=1e-9 trained into leaves of 1 frame sized from the budget and stopped with "leaves of 1
    centres need 0.00 GiB each ..., over the memory budget of 0.00 GiB"."""
    _refused(["kernel.memory_gb=1e-9"], "kernel.memory_gb", "1e-09 GiB is too small", "at least 0.001")
    assert load_recipe(RECIPES / "demo", ["kernel.memory_gb=0.001"]).kernel.memory_gb == 0.001


def test_a_memory_budget_beyond_the_machine_is_refused_before_any_work(tmp_path, capsys, monkeypatch, caplog):
    """kernel.memory_gb=1e12 was taken as it was: the solver planned exact solves and tiles for a terabyte, which
    end in swap or the out-of-memory killer on a bigger corpus. Beyond the machine's memory it is refused in one
    line naming what is there; beyond what is available now (memory may yet be freed) a warning says so."""
    import logging

    import numpy as np

    import speechkern.kernels.memory as memory
    from speechkern import kernels
    from speechkern.eigenpro import EigenProRegressor
    from speechkern.pipeline import kernel_budget_bytes

    out = tmp_path / "run"
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--set", "kernel.memory_gb=1e12", "--out", str(out),
                            "--models", "kernel", "-q"], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "kernel.memory_gb=1e+12: more than the " in err and "GiB of memory of this machine (" in err, err
    assert "GiB available now); give a budget below what is available, or give 0 for a third of it" in err, err
    assert not (out / "manifests").exists() and not (out / "models").exists()
    monkeypatch.setattr(memory, "total_memory_bytes", lambda device: 2 << 30)  # the library's own parameter too
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    with pytest.raises(SpeechkernError, match=r"^memory_budget_gb=4: more than the 2.0 GiB of memory of this"):
        EigenProRegressor(memory_budget_gb=4, epochs=1).fit(X, X[:, :1])
    EigenProRegressor(memory_budget_gb=1, epochs=1).fit(X, X[:, :1])
    monkeypatch.setattr(kernels, "available_memory_bytes", lambda device: 1 << 30)
    recipe = load_recipe(RECIPES / "demo", ["kernel.memory_gb=1.5"])
    with caplog.at_level(logging.WARNING, logger="speechkern"):
        assert kernel_budget_bytes(recipe, "cpu") == int(1.5 * 2**30)
    assert "kernel.memory_gb=1.5: more than the 1.0 GiB of memory available now" in caplog.text


def test_generated_noise_too_long_to_hold_is_refused_at_load(monkeypatch):
    """data.generated_noise_s=1e9 loaded, and training ended in a NumPy MemoryError traceback ("Unable to allocate
    58.2 TiB") after the sources were written; a length that fits but not by much would swap."""
    import speechkern.recipe as recipe_module

    _refused(["data.generated_noise_s=1e9"], "recipe override data.generated_noise_s=1e9: recipe key "
             "data.generated_noise_s: 1e+09 s of generated noise (babble and ssn) needs about", "GiB this machine "
             "allows; give at most")  # fmt: skip
    monkeypatch.setattr(recipe_module, "memory_budget", lambda: 1 << 30)
    _refused(["data.generated_noise_s=3600"], "give at most 1677 s")
    assert load_recipe(RECIPES / "demo", ["data.generated_noise_s=1600"]).data.generated_noise_s == 1600


@pytest.mark.parametrize("override", ["data.snrs=[]", "data.noises=[]"])
def test_a_recipe_that_mixes_nothing_is_refused_at_load(override):
    """data.snrs=[] prepared the data and stopped with "condition all: no train mixtures; check the recipe's data
    section", naming no key."""
    key = override.split("=")[0]
    _refused([override], f"recipe override {override}: recipe key {key}: empty, so corpus 'demo' makes no mixture")
    if key == "data.snrs":  # conditions carry their own SNRs
        assert load_recipe(RECIPES / "demo", [override, "data.conditions=['ssn@0']"]).data.conditions == ["ssn@0"]


def test_too_few_training_frames_are_refused_at_load():
    """train.max_train_frames=1 prepared the data and stopped with "the training frames autotune sampled are all
    the same (silent or constant audio?)", blaming the audio."""
    _refused(["train.max_train_frames=1"], "train.max_train_frames", "1 training frames cannot fit", "at least 10")
    assert load_recipe(RECIPES / "demo", ["train.max_train_frames=10"]).train.max_train_frames == 10


@pytest.mark.parametrize(
    "override, says",
    [("data.snrs=0", "expected a list, even of one value: write [0] (a TOML list)"),
     ("kernel.gammas=1.0", "write [1.0]"), ("dnn.hidden=64", "write [64]"), ("kernel.ridges=0.1", "write [0.1]"),
     ("data.noises=ssn", 'write ["ssn"]'), ("train.models=kernel", 'write ["kernel"]'),
     ("data.snrs={a=1}", "expected a list (a TOML list), such as [0.0]"), ("data.snrs=abc", "such as [0.0]"),
     ("data.snrs=[a, b]", "such as [0.0]"), ("dnn.hidden=x", "such as [1024, 1024, 1024]"),
     ("data.noises=[ssn, babble]", """not a TOML list: strings in it need double quotes, which the shell removes """
                                   """unless the override is in single quotes: recipe override """
                                   """'data.noises=["ssn", "babble"]'""")],
)  # fmt: skip
def test_a_scalar_for_a_list_key_says_what_to_write(override, says):
    """data.snrs=0 was refused with pydantic's "Input should be a valid list", without the [0] it wanted; and
    --set data.noises=["ssn"] (the shell takes the quotes) was read as the string '[ssn]' and refused alike."""
    key = override.split("=")[0]
    _refused([override], f"recipe override {override}: recipe key '{key}' = ", says)


def test_a_scalar_for_a_list_key_in_a_recipe_file_says_what_to_write(tmp_path, capsys):
    text = (RECIPES / "demo" / "recipe.toml").read_text()
    (tmp_path / "recipe.toml").write_text(text.replace("[data]\n", "[data]\nsnrs = 0\n", 1).replace("snrs = [", "#", 1))
    code, _, err = run_cli(["train", str(tmp_path), "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path}/recipe.toml: recipe key 'data.snrs' = 0: expected a list, even of one value: write [0]" in err
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--set", "data.noises=[ssn]", "--out",
                            str(tmp_path / "run"), "-q"], capsys)  # fmt: skip
    assert code == 2 and err.endswith("""--set 'data.noises=["ssn"]'\n"""), err


@pytest.mark.parametrize(
    "overrides, blamed, says",
    [(["features.n_channels=1"], "features.n_channels=1", "kernel.subbands, features.n_channels, target.domain: 4 "
      "subbands, but the cochleagram mask has 1 channel (features.n_channels = 1); choose kernel.subbands from 1 to 1"),
     (["features.n_channels=3"], "features.n_channels=3", "mask has 3 channels"),
     (["kernel.subbands=65"], "kernel.subbands=65", "65 subbands, but the cochleagram mask has 64 channels"),
     (["features.ams_frame_length=1024", "features.sr=22050", "features.fmax=11025"], "features.sr=22050",
      "data.sr, features.sr: 16000 Hz and 22050 Hz; set both to the same rate")],
)  # fmt: skip
def test_a_check_across_sections_blames_the_override_given_not_the_recipe_file(overrides, blamed, says):
    """--set features.n_channels=1 was refused as "recipes/demo/recipe.toml: recipe key kernel.subbands: 4 subbands,
    but the cochleagram mask has 1 channels": the file blamed, the key given unnamed; so was --set features.sr."""
    message = _refused(overrides, says)
    assert message.startswith(f"recipe override {blamed}: recipe key "), message


@pytest.mark.parametrize("inside", ["models/x", "report/run", "manifests/a/b"])
def test_a_run_inside_another_run_is_refused_before_any_work(tmp_path, capsys, inside):
    """`speechkern train recipes/demo --out runs/a/report/run` trained a run inside another run's report/ (which
    evaluate --overwrite replaces) or models/ (where it passed for a model folder)."""
    from speechkern.pipeline import train

    outer = tmp_path / "a"
    for sub in ("manifests", "models", "report"):
        (outer / sub).mkdir(parents=True)
    (outer / "recipe.toml").write_text((RECIPES / "demo" / "recipe.toml").read_text())
    (outer / "train.log").write_text("")
    code, _, err = run_cli(["train", str(RECIPES / "demo"), "--out", str(outer / inside), "-q"], capsys)
    assert code == 2 and err == (
        f"error: {outer / inside}: lies inside the run directory {outer}, which --overwrite "
        f"(training it again) deletes with it; choose a run directory outside {outer}\n"
    ), err
    assert not (outer / inside).exists()
    with pytest.raises(SpeechkernError, match=r"lies inside the run directory"):
        train(load_recipe(RECIPES / "demo"), outer / inside)
    assert not (outer / inside).exists()
