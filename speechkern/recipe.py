"""Recipes: what to train on and how, as a TOML file plus ``--set key=value`` overrides, validated.

A recipe folder holds ``recipe.toml``. Every key has a default here, so a recipe names only what differs.
Unknown keys and bad values (including values that contradict each other, such as more subbands than mask
channels) stop at load, before anything is written, with a message that names the key, the value and what is
allowed.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig, input_dim
from speechkern.limits import DNN_COPIES, check_network, memory_budget, mlp_weights
from speechkern.targets import TargetConfig, mask_units

_CONDITION = r"^.+@[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$"  # NOISE@SNR with a finite SNR in dB
MAX_SNR_DB = 100.0  # beyond it the noise gain (or its inverse) over- or underflows float32 audio
MAX_INT = 2**31 - 1  # counts and seeds beyond a C int overflow in joblib (workers), torch and NumPy
MAX_FLOAT = 3.4028234663852886e38  # the largest float32: the models compute in float32
MIN_FIT_FRAMES = 1000  # a recipe whose float32 inputs of this many frames exceed the memory budget cannot train
# The smallest leaf of the local solver: a second of frames (10 ms hop). Each leaf is an exact solve of its own frames
# only, with its routing and its share of the global machine's residual; below this, leaves of a few frames each
# learn next to nothing and their count makes the fit crawl (1500 frames in leaves of 1 took 4.7 minutes).
MIN_LEAF_SIZE = 100
# The fewest training frames (train.max_train_frames), as kernel.autotune_train_frames: with one, the autotune said
# the frames "are all the same (silent or constant audio?)".
MIN_TRAIN_FRAMES = 10
# Peak memory of generating noise, per sample (float64 spectra and the irfft of speech-shaped noise: 32 measured).
NOISE_BYTES_PER_SAMPLE = 40
# The smallest kernel.memory_gb (1 MiB): the local solver sizes its leaves from the budget, and below this they fall
# under MIN_LEAF_SIZE frames (10⁻⁴ GiB: leaves of 146 frames, 10⁻⁵: 46, 10⁻⁹: 1), and its refusals read "0.00 GiB".
MIN_MEMORY_GB = 0.001
# The fewest centres of a compact kernel machine (kernel.centers, kernel.leaf_centers, kernel.global_centers): a
# machine of a few centres is a few bumps, not a model of a mask (on a toy regression, 1 centre left 98 % of the
# targets' variance, 2 centres 66–90 %, 10 centres 17 %); the tests' smallest compact models have 40 to 60.
MIN_CENTERS = 10


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:  # a NUL byte cannot be in a path or a TOML file
        if (isinstance(value, str) and "\x00" in value) or (
            isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value)
        ):
            raise ValueError("holds a NUL character; remove it")
        return value


class DataConfig(_Section):
    """Speech, noise and mixing (SPEC §2).

    Corpus roots: a key left empty is read from the environment (``TIMIT_ROOT``, ``NOISEX_ROOT``, ``HINT_ROOT``,
    ``VOICEBANK_ROOT``, each also as ``SPEECHKERN_<NAME>_ROOT``, which wins); the corpus readers in
    :mod:`speechkern.corpora` look them up. Split sizes: ``demo``, ``folder`` and ``hint`` draw exact counts;
    ``timit`` and ``voicebank`` have fixed test (and, for voicebank, validation) sets that the counts only cap.
    """

    corpus: Literal["demo", "folder", "manifest", "timit", "hint", "voicebank"] = "demo"
    clean_dir: str = Field("", description="folder of clean speech (corpus 'folder'), searched recursively")
    manifest: str = Field(
        "", description="CSV of audio files (columns path, kind, speaker_or_type, licence; paths relative to the "
        "CSV's folder) for corpus 'manifest' (its clean rows) and the noise 'manifest' (its noise rows)",
    )  # fmt: skip
    exclude_licences: list[str] = Field(
        default_factory=list, description="manifest rows whose licence contains one of these (e.g. 'SA', 'GPL') "
        "are left out, so that a model trained on the rest can carry a licence of its own",
    )  # fmt: skip
    noise_dir: str = Field("", description="folder of noise recordings, searched recursively")
    timit_root: str = Field(
        "", description="TIMIT (LDC layout: TRAIN/ and TEST/ with DR1..DR8/<speaker>/<utt>.WAV); empty: $TIMIT_ROOT"
    )
    noisex_root: str = Field(
        "", description="folder of NOISEX-92 recordings for 'noisex:NAME' noises; empty: $NOISEX_ROOT"
    )
    hint_root: str = Field("", description="folder of HINT sentences (audio files, any sub-folders); empty: $HINT_ROOT")
    voicebank_root: str = Field(
        "", description="VoiceBank-DEMAND ({clean,noisy}_{trainset_28spk,testset}_wav/); empty: $VOICEBANK_ROOT"
    )
    timit_test: Literal["core", "complete"] = Field(
        "core", description="TIMIT test split: the 192-utterance core test set or every SI/SX utterance of TEST"
    )
    voicebank_val_speakers: list[str] = Field(
        default_factory=lambda: ["p226", "p287"], description="VoiceBank-DEMAND training speakers kept for validation"
    )
    noises: list[str] = Field(
        default_factory=lambda: ["ssn", "babble"],
        description="'ssn' and 'babble' are generated from training speech; 'dir' pools the noise_dir recordings; "
        "'noisex:NAME' is a NOISEX-92 recording from noisex_root (babble, factory1, engine, oproom, ...), named NAME; "
        "'manifest' pools the noise rows of data.manifest; or the path of an audio file",
    )
    snrs: list[Annotated[float, Field(ge=-MAX_SNR_DB, le=MAX_SNR_DB)]] = Field(
        default_factory=lambda: [0.0], description="mixture SNRs in dB"
    )
    conditions: list[Annotated[str, Field(pattern=_CONDITION)]] = Field(
        default_factory=list, description="'NOISE@SNR' pairs to mix instead of every noise × SNR, e.g. ssn@-5"
    )
    n_train: int = Field(
        120, ge=0, description="training utterances (before mixing); 0: all (timit, hint: all not held out)"
    )
    n_val: int = Field(20, ge=0, description="validation utterances (voicebank: a cap, 0 = all)")
    n_test: int = Field(
        20, ge=0, description="test utterances (timit, voicebank: a cap on the fixed test set; 0 = all)"
    )
    max_utterance_s: float = Field(12.0, ge=0.1, description="longer utterances are cut to this length (s)")
    sr: int = Field(16000, gt=0, description="sample rate in Hz of everything downstream (= features.sr)")
    seed: int = Field(0, ge=0)
    pairing: Literal["all", "one"] = Field(
        "all", description="train/val: mix each utterance with every condition ('all') or one drawn at random"
    )
    test_pairing: Literal["all", "one"] = Field("all", description="the same choice for the test split")
    split_by: Literal["file", "talker"] = Field(
        "file", description="corpus 'folder': split files at random, or whole talkers (one folder per talker)"
    )
    conditions_per_utterance: int = Field(
        1, ge=1, description="with pairing 'one': distinct conditions drawn for each train/val utterance"
    )
    babble_talkers: int = Field(6, ge=2)
    val_noise_share: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="share of each noise's first half kept for validation mixtures, which training then never "
        "hears (0: validation draws from the training part, SPEC §2)",
    )
    generated_noise_s: float = Field(120.0, gt=1, description="length of generated noise recordings (s)")


class KernelConfig(_Section):
    """The subband kernel machine (SPEC §6)."""

    subbands: int = Field(4, ge=1, description="contiguous blocks of mask channels, one kernel model each")
    shape: float = Field(1.0, gt=0, le=2, description="γ of k(x,z)=exp(-|x-z|^γ/σ) when not autotuned")
    bandwidth: float = Field(10.0, gt=0, description="σ when not autotuned")
    autotune: bool = False
    gammas: list[Annotated[float, Field(gt=0, le=2)]] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0], min_length=1, description="Γ of Algorithm 1, each in (0, 2]"
    )
    sigma_low: float = Field(0.0, ge=0, description="σ_l of Algorithm 1 (0: median ‖x−z‖^γ / 8)")
    sigma_high: float = Field(0.0, ge=0, description="σ_h of Algorithm 1 (0: 8 × median ‖x−z‖^γ)")
    sigma_steps_per_octave: int = Field(4, ge=1, description="resolution of the σ grid the search runs on")
    autotune_train_frames: int = Field(4000, ge=10)
    autotune_val_frames: int = Field(2000, ge=10)
    autotune_epochs: int = Field(3, ge=1)
    solver: Literal["auto", "local", "exact", "eigenpro", "eigenpro2", "eigenpro3"] = Field(
        "auto",
        description="auto/local: every frame a centre, leaves of a median-split tree each solved exactly (one leaf: "
        "the exact solve); exact: one leaf, refused where it does not fit; eigenpro: EigenPro 2 while every frame "
        "as a centre fits the memory and time budget, else EigenPro 3; auto with kernel.centers > 0: EigenPro 3",
    )
    ridge: float = Field(
        0.01, ge=0, description="λ of min ‖Kw − Y‖² + λ·wᵀKw for the local and exact solvers when not autotuned"
    )
    ridges: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1],
        min_length=1,
        description="λ values autotune tries with each (γ, σ) for the local and exact solvers",
    )
    eigenpro_ridge: float = Field(0.0, ge=0, description="λ of the EigenPro solvers (0: early stopping regularises)")
    leaf_size: int = Field(
        0, ge=0, le=40000, description=f"largest leaf of the local solver (0 = from the memory; else ≥ {MIN_LEAF_SIZE})"
    )
    leaf_centers: int = Field(
        0,
        ge=0,
        le=40000,
        description="centres each leaf of the local solver keeps (0 = every frame; m ≥ 10: a "
        "compact model of leaves × m centres, each leaf solved in the Nyström form over all its frames)",
    )
    trees: int = Field(
        0,
        ge=0,
        le=8,
        description="partitions the local solver averages, each cut along a further principal direction (t-fold "
        "time, model size and prediction cost; no effect with one leaf); 0 = 3 for a tree of 2 to 8 leaves, else 1",
    )
    global_centers: Literal["auto"] | Annotated[int, Field(ge=0, le=40000)] = Field(
        "auto",
        description="centres of a global machine the local solver fits to every frame before its leaves, which "
        "then fit its residuals (0 = none, else ≥ 10; no effect with one leaf); auto = 4000 wherever there are "
        "leaves (fewer where the memory budget cannot hold their 24·m² bytes)",
    )
    global_frames: int = Field(
        400_000,  # eigenpro.local.DEFAULT_GLOBAL_FRAMES
        ge=0,
        description="frames the global machine is fitted to: a seeded draw of this many where there are more (its "
        "normal equations cost frames·m²; the leaves still fit every frame's residuals); 0 = every frame",
    )
    centers_dtype: Literal["float32", "float16"] = Field(
        "float32", description="the local solver's centres, rounded before the solve and stored so (float16: half size)"
    )
    centers: int = Field(
        0, ge=0, description="EigenPro 3 centres (0 = chosen from the data size and memory; else ≥ 10)"
    )
    memory_gb: float = Field(
        0.0,
        ge=0,
        description=f"memory budget of one kernel fit in GiB (0 = a third of free; else ≥ {MIN_MEMORY_GB:g} and at "
        "most the machine's memory)",
    )
    epochs: int = Field(10, ge=1)
    patience: int = Field(2, ge=1)
    input_transform: Literal["none", "pca", "whiten", "rfm", "pca+rfm"] = Field(
        "none",
        description="linear map of the normalised inputs before the kernel, fitted on training frames: "
        "principal directions ('pca'), the same scaled to unit variance ('whiten'), a learned metric kept only where "
        "it lowers the validation MSE ('rfm'), or that metric learned on the principal directions ('pca+rfm')",
    )
    input_dims: int = Field(0, ge=0, description="dimensions kept by the input transform (rank of M for rfm; 0 = all)")
    rfm_frames: int = Field(20000, ge=20, le=40000, description="frames of the exact kernel fit whose gradients give M")
    rfm_iterations: int = Field(1, ge=1, description="RFM updates of the metric M (each refits the kernel)")
    rfm_diagonal: bool = Field(False, description="try only the diagonal of M (per-input weights), not the full M")
    rfm_agop_frames: int = Field(2000, ge=20, description="frames of the RFM fit whose gradients are averaged")

    @field_validator("memory_gb")
    @classmethod
    def _budget_holds_a_leaf(cls, value: float) -> float:
        message = (f"{value:g} GiB is too small to fit a kernel machine; give 0 (a third of the free memory) or at "
                   f"least {MIN_MEMORY_GB:g} (1 MiB; the solver sizes its leaves from the budget, and below it they "
                   f"hold fewer than {MIN_LEAF_SIZE} frames)")  # fmt: skip
        return _off_or_at_least(value, MIN_MEMORY_GB, message)

    @field_validator("centers", "leaf_centers", "global_centers")
    @classmethod
    def _enough_centres(cls, value: int | str, info: ValidationInfo) -> int | str:
        if isinstance(value, str):  # global_centers = "auto"
            return value
        off = {"centers": "chosen from the data size and memory", "leaf_centers": "every frame of a leaf",
               "global_centers": "no global machine"}[info.field_name]  # fmt: skip
        message = (f"{value} centres are too few for a kernel machine (a few kernel bumps, not a model of a mask); "
                   f"give 0 ({off}) or at least {MIN_CENTERS}, such as 1000")  # fmt: skip
        return _off_or_at_least(value, MIN_CENTERS, message)

    @field_validator("leaf_size")
    @classmethod
    def _leaf_holds_frames(cls, value: int) -> int:
        message = (f"{value} frames per leaf is too few; give 0 (sized from the memory) or at least {MIN_LEAF_SIZE} "
                   "(each leaf is solved from its own frames alone: leaves of a few frames learn next to nothing, and "
                   "their number makes the fit crawl)")  # fmt: skip
        return _off_or_at_least(value, MIN_LEAF_SIZE, message)


class DNNConfig(_Section):
    """The multilayer-perceptron baseline (SPEC §7)."""

    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1024, 1024, 1024])
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(3, ge=1)
    optimizer: Literal["adam", "adagrad-momentum"] = Field(
        "adam", description="Adam, or AdaGrad with momentum 0.5 then 0.9 from epoch 6 (the OSU DNN toolbox's learner)"
    )


class TrainConfig(_Section):
    models: list[Literal["kernel", "dnn"]] = Field(default_factory=lambda: ["kernel", "dnn"], min_length=1)
    mode: Literal["multi-condition", "per-condition"] = "multi-condition"
    device: str = "auto"
    workers: int = Field(0, ge=0, description="feature-extraction processes (0 = one per CPU core)")
    max_train_frames: int = Field(
        0, ge=0, description="cap on training frames, drawn at random, the same for every model (0 = all)"
    )
    max_val_frames: int = Field(5000, ge=0, description="validation frames for early stopping (0 = all)")

    @field_validator("max_train_frames")
    @classmethod
    def _enough_frames(cls, value: int) -> int:
        message = (f"{value} training frames cannot fit a model (the kernel's bandwidth is chosen from the distances "
                   f"between frames); give 0 (all) or at least {MIN_TRAIN_FRAMES}, such as 10000")  # fmt: skip
        return _off_or_at_least(value, MIN_TRAIN_FRAMES, message)


class EvaluateConfig(_Section):
    examples: int = Field(3, ge=0, description="test examples with audio players in the report")


class Recipe(_Section):
    """A whole experiment: data, features, target, models and training settings."""

    name: str = "experiment"
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    target: TargetConfig = Field(default_factory=TargetConfig)
    kernel: KernelConfig = Field(default_factory=KernelConfig)
    dnn: DNNConfig = Field(default_factory=DNNConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\") or value.startswith(".") or not value.isprintable():
            raise ValueError("must be a plain folder name (no slashes, leading dot or control characters)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _sections_and_numbers(cls, data: Any) -> Any:
        """Refuse a section written as a value, true/false where a number is expected (pydantic reads them as
        1 and 0), and anything but true/false for a switch (pydantic reads "yes", "off", 1 as booleans); raised as
        ``key: message``."""
        if not isinstance(data, dict):
            return data
        for section, values in data.items():
            model = _section_at((section,))
            if model is None or isinstance(values, BaseModel):
                continue
            if not isinstance(values, dict):
                raise ValueError(f"{section}: expected a [{section}] section (a table of keys), not {values!r}; "
                                 f"write [{section}] on a line of its own with its keys below")  # fmt: skip
            for key, value in values.items():
                field = model.model_fields.get(key)
                items = value if isinstance(value, list) else [value]
                if field is not None and _number_type(field.annotation) and any(isinstance(v, bool) for v in items):
                    raise ValueError(f"{section}.{key}: {_toml_value(value)} holds true or false, but the key takes "
                                     "a number; write the number")  # fmt: skip
                if field is not None and field.annotation is bool and not isinstance(value, bool):
                    # pydantic reads "yes", "on", 1, "0" as booleans: a typo or a number would pass for a choice
                    raise ValueError(f"{section}.{key}: {_toml_value(value)} is not true or false; write true or "
                                     "false (without quotes)")  # fmt: skip
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        """Checks across sections; each names the key to change (raised as ``key: message``)."""
        _check_magnitudes(self)
        n_units = mask_units(self.target, self.features)
        if self.kernel.subbands > n_units:  # the prefix names every key involved: the one given is blamed
            size = ("features.n_channels", "channels") if self.target.domain == "cochleagram" else (
                "features.frame_length", "frequency bins")  # fmt: skip
            has = f"{n_units} {size[1] if n_units > 1 else size[1][:-1]}"  # 1 channel
            raise ValueError(f"kernel.subbands, {size[0]}, target.domain: {self.kernel.subbands} subbands, but the "
                             f"{self.target.domain} mask has {has} ({size[0]} = "
                             f"{getattr(self.features, size[0].split('.')[1])}); choose kernel.subbands from 1 to "
                             f"{n_units}, or a mask of at least {self.kernel.subbands} {size[1]}")  # fmt: skip
        if self.data.sr != self.features.sr:
            raise ValueError(f"data.sr, features.sr: {self.data.sr} Hz and {self.features.sr} Hz; set both to the "
                             "same rate (and features.fmax to at most half of it)")  # fmt: skip
        _check_noises_and_splits(self.data)
        generated = sorted({"ssn", "babble"} & set(self.data.noises))
        need = NOISE_BYTES_PER_SAMPLE * self.data.generated_noise_s * self.data.sr
        if generated and need > memory_budget():  # at load: it failed with a NumPy MemoryError traceback, or swapped
            most = math.floor(memory_budget() / (NOISE_BYTES_PER_SAMPLE * self.data.sr))
            raise ValueError(f"data.generated_noise_s: {self.data.generated_noise_s:g} s of generated noise "
                             f"({' and '.join(generated)}) needs about {need / 2**30:.3g} GiB to generate, over the "
                             f"{memory_budget() / 2**30:.1f} GiB this machine allows; give at most {most} s "
                             "(recordings of 60 to 240 s are usual)")  # fmt: skip
        kc = self.kernel
        n_inputs = input_dim(self.features)
        if n_inputs * 4 * MIN_FIT_FRAMES > memory_budget():
            raise ValueError(f"features.context: {self.features.context} gives {n_inputs} inputs per frame, so "
                             f"{MIN_FIT_FRAMES} frames alone would exceed the {memory_budget() / 2**30:.1f} GiB this "
                             "machine allows; choose a context of a few frames (the paper's: 2)")  # fmt: skip
        if "dnn" in self.train.models:
            try:  # at load, before any feature is computed (the allocation failed, or swapped, at the DNN's turn)
                check_network(f"{self.dnn.hidden}", mlp_weights([n_inputs, *self.dnn.hidden, n_units]), DNN_COPIES,
                              "choose fewer or narrower hidden layers (the paper's: [1024, 1024, 1024])")  # fmt: skip
            except SpeechkernError as err:  # raised as ``key: message``
                raise ValueError(f"dnn.hidden: {err}") from None
        if kc.input_transform != "none" and kc.input_dims > n_inputs:
            raise ValueError(f"kernel.input_dims: {kc.input_dims}, but the features give {n_inputs} inputs per frame; "
                             f"choose 0 (all) to {n_inputs}")  # fmt: skip
        if (kc.sigma_low > 0 or kc.sigma_high > 0) and not 0 < kc.sigma_low < kc.sigma_high:
            raise ValueError(f"kernel.sigma_low, kernel.sigma_high: {kc.sigma_low} and {kc.sigma_high}; set both, "
                             "with 0 < sigma_low < sigma_high, or both to 0 for the automatic range")  # fmt: skip
        return self

    def to_toml(self) -> str:
        """The resolved recipe as TOML text (every key, overrides applied)."""
        return _dump_toml(self.model_dump(mode="json"))


# Data keys that name files or folders; data.noises entries other than these words (and noisex:NAME) are files too.
PATH_KEYS = ("clean_dir", "manifest", "noise_dir", "timit_root", "noisex_root", "hint_root", "voicebank_root")
NOISE_WORDS = ("ssn", "babble", "dir", "manifest")


def _off_or_at_least(value: float, least: float, message: str) -> float:
    """``value`` where it is 0 (off, or chosen by the engine) or at least ``least``; else ValueError(``message``)."""
    if 0 < value < least:
        raise ValueError(message)
    return value


def found_from_run(
    path: str | os.PathLike, run_dir: str | os.PathLike, where: Callable[[Path], bool] = Path.exists
) -> str | None:
    """A relative ``path`` of a run written before paths were stored absolute, made absolute: against the first of
    the working directory and the folders above ``run_dir`` where ``where`` holds (the folder the run was trained
    from is usually one of them); None where it holds nowhere."""
    bases = [Path.cwd(), *Path(os.path.abspath(run_dir)).parents]
    found = next((base / path for base in bases if where(base / path)), None)
    return None if found is None else os.path.abspath(found)


def with_absolute_paths(recipe: Recipe, run_dir: str | os.PathLike | None = None) -> Recipe:
    """``recipe`` with its relative data paths (:data:`PATH_KEYS`, noise files in ``data.noises``) made absolute.

    Without ``run_dir``, against the working directory (what a run's recipe.toml is written with, so the run reads
    its data from any folder). With ``run_dir``, for the recipe.toml of a run written before that: against the first
    of the working directory and the folders above the run where the path exists (the folder the run was trained
    from is usually one of them); a path found nowhere is left as it is, for the step that reads it to name."""

    def absolute(value: str) -> str:
        if not value or Path(value).is_absolute():
            return value
        if run_dir is None:
            return os.path.abspath(value)
        return found_from_run(value, run_dir) or value

    data = recipe.data
    paths = {key: absolute(getattr(data, key)) for key in PATH_KEYS}
    noises = [n if n in NOISE_WORDS or n.lower().startswith("noisex:") else absolute(n) for n in data.noises]
    return recipe.model_copy(update={"data": data.model_copy(update={**paths, "noises": noises})})


def inert_settings(recipe: Recipe) -> list[str]:
    """Settings of the kernel machine that the rest of the recipe leaves without effect, one sentence each (the
    pipeline logs them as warnings: accepted, since a recipe may switch the setting they depend on by override)."""
    kc, notes = recipe.kernel, []
    if kc.input_transform == "none" and kc.input_dims:
        notes.append(f"kernel.input_dims = {kc.input_dims} has no effect: kernel.input_transform is 'none'")
    if kc.centers and kc.solver in ("local", "exact"):
        notes.append(f"kernel.centers = {kc.centers} has no effect with kernel.solver = '{kc.solver}' (every frame "
                     "is a centre; kernel.leaf_centers keeps fewer per leaf)")  # fmt: skip
    not_local = kc.solver in ("eigenpro", "eigenpro2", "eigenpro3", "exact") or (kc.solver == "auto" and kc.centers)
    why = f"kernel.solver = '{kc.solver}'" + (f" with kernel.centers = {kc.centers}" if kc.centers else "")
    if kc.trees > 1 and not_local:
        notes.append(f"kernel.trees = {kc.trees} has no effect with {why}: only the local solver averages trees")
    if kc.global_frames != KernelConfig.model_fields["global_frames"].default and not_local:
        notes.append(f"kernel.global_frames = {kc.global_frames} has no effect with {why}: only the local solver "
                     "fits a global machine under its leaves")  # fmt: skip
    if kc.global_centers not in (0, "auto") and not_local:
        notes.append(f"kernel.global_centers = {kc.global_centers} has no effect with {why}: only the local solver "
                     "fits a global machine under its leaves")  # fmt: skip
    if "rfm" in kc.input_transform and kc.rfm_agop_frames > kc.rfm_frames:
        notes.append(f"kernel.rfm_agop_frames = {kc.rfm_agop_frames} is capped at kernel.rfm_frames = "
                     f"{kc.rfm_frames}: the gradients are taken on the frames of the fit")  # fmt: skip
    return notes


def _number_type(annotation: Any) -> type | None:
    """int or float where a field (or the items of a list field) holds numbers, else None."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is list:
        return _number_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(filter(None, map(_number_type, typing.get_args(annotation))), None)
    return annotation if annotation in (int, float) else None


def _check_magnitudes(recipe: Recipe) -> None:
    """Refuse integers beyond a C int and floats beyond float32, which pass the per-key bounds but overflow in
    joblib, NumPy or torch once the run has started (raised as ``key: message``)."""
    for section in Recipe.model_fields:
        model = _section_at((section,))
        if model is None:
            continue
        for key, field in model.model_fields.items():
            kind = _number_type(field.annotation)
            value = getattr(getattr(recipe, section), key)
            for v in value if isinstance(value, list) else [value]:
                if kind is int and isinstance(v, int) and abs(v) > MAX_INT:
                    raise ValueError(f"{section}.{key}: {v} is beyond {MAX_INT}, the largest integer speechkern "
                                     "passes on to the libraries it computes with; choose a smaller value")  # fmt: skip
                if isinstance(v, float) and math.isfinite(v) and abs(v) > MAX_FLOAT:
                    raise ValueError(f"{section}.{key}: {v:g} is beyond {MAX_FLOAT:.1e}, the largest float32 (the "
                                     "models compute in float32); choose a smaller value")  # fmt: skip


_KEYWORD_NOISES = ("ssn", "babble", "dir", "manifest")
_DRAWN_SPLITS = ("demo", "folder", "manifest", "hint")  # corpora whose n_val / n_test are exact counts


def _check_noises_and_splits(data: DataConfig) -> None:
    """Refuse, at load, a noise entry that names no noise, a noise, SNR or condition given twice (its mixtures
    would share their ids), a condition naming a noise the recipe does not have, and a validation or test split
    left empty (raised as ``key: message``)."""
    from speechkern.audio import READ_SUFFIXES

    names: list[str] = []
    given: dict[str, str] = {}
    for spec in data.noises:
        if spec in _KEYWORD_NOISES or spec.lower().startswith("noisex:"):
            names.append(spec.split(":", 1)[1].strip() if ":" in spec else spec)
        elif Path(spec).suffix.lower() in READ_SUFFIXES:
            names.append(Path(spec).stem)
        else:
            raise ValueError(f"data.noises: {spec!r} is not a noise; expected {', '.join(_KEYWORD_NOISES)}, "
                             "noisex:NAME or the path of an audio file")  # fmt: skip
        if names[-1] in given and names[-1] not in ("dir", "manifest"):
            raise ValueError(f"data.noises: {names[-1]!r} is given twice ({given[names[-1]]!r} and {spec!r} are both "
                             "named so); each noise needs its own name")  # fmt: skip
        given[names[-1]] = spec
    for snr in data.snrs:
        if data.snrs.count(snr) > 1:
            raise ValueError(f"data.snrs: {snr + 0.0:g} dB is given twice; give each SNR once")
    if data.corpus not in ("voicebank", "manifest") and not data.conditions:  # these corpora mix every mixture
        for key, example in (("noises", "['ssn', 'babble']"), ("snrs", "[0]")):
            if not getattr(data, key):  # was "condition all: no train mixtures" after the data was prepared
                raise ValueError(f"data.{key}: empty, so corpus {data.corpus!r} makes no mixture (every noise × "
                                 f"SNR); give at least one, such as {example}, or list data.conditions")  # fmt: skip
    seen: dict[tuple[str, float], str] = {}
    for item in data.conditions:
        noise, _, snr = item.rpartition("@")
        if abs(float(snr)) > MAX_SNR_DB:
            raise ValueError(f"data.conditions: {item!r} has an SNR beyond ±{MAX_SNR_DB:g} dB; choose an SNR from "
                             f"{-MAX_SNR_DB:g} to {MAX_SNR_DB:g} dB")  # fmt: skip
        if (noise, float(snr)) in seen:
            raise ValueError(f"data.conditions: {item!r} repeats {seen[noise, float(snr)]!r}; give each condition "
                             "once")  # fmt: skip
        seen[noise, float(snr)] = item
    if not any(n in ("dir", "manifest") for n in names):  # names known before any file is read
        for item in data.conditions:
            noise = item.rpartition("@")[0]
            if noise not in names:
                raise ValueError(f"data.conditions: {item!r} names no noise of data.noises (its noises are "
                                 f"{', '.join(names)}); use one of them before the @")  # fmt: skip
    if data.corpus in _DRAWN_SPLITS:
        for split in ("val", "test"):
            if getattr(data, f"n_{split}") == 0:
                raise ValueError(f"data.n_{split}: 0 utterances leave the {split} split empty (corpus "
                                 f"{data.corpus!r} draws exact counts); set at least 1")  # fmt: skip


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value); the value is read as a TOML literal, else kept as a string."""
    if "=" not in item:
        raise SpeechkernError(f"recipe override {item!r}: expected KEY=VALUE, for example recipe override "
                              "data.snrs=[0,5]")  # fmt: skip
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except RecursionError:
        raise SpeechkernError(f"recipe override {key}: the value is nested too deeply; recipe values are numbers, "
                              "strings and flat lists") from None  # fmt: skip
    return key.split("."), value


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read ``recipe.toml`` from a recipe folder (or the file itself), apply overrides, validate."""
    path = Path(path)
    file = path / "recipe.toml" if path.is_dir() else path
    if not file.is_file():
        hint = f" (a folder with recipe.toml; built-in ones are in {_recipes_hint()})"
        raise SpeechkernError(f"{path}: no recipe found{hint}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8-sig"))  # -sig: editors on Windows write a BOM
    except tomllib.TOMLDecodeError as err:
        raise SpeechkernError(f"{file}: not valid TOML ({err})") from None
    except RecursionError:
        raise SpeechkernError(f"{file}: a value is nested too deeply; recipe values are numbers, strings and flat "
                              "lists") from None  # fmt: skip
    except (UnicodeDecodeError, OSError) as err:
        raise SpeechkernError(
            f"{file}: not a readable UTF-8 text file ({err}); give a recipe folder or its recipe.toml"
        ) from None
    if not data:
        raise SpeechkernError(f"{file}: holds no settings; a recipe names at least its data (copy "
                              f"{_recipes_hint()}/demo/recipe.toml to start from one that runs)")  # fmt: skip
    origins: dict[tuple[str, ...], str] = {}
    for item in overrides:
        keys, value = parse_override(item)
        item = "".join(c if c.isprintable() else repr(c)[1:-1] for c in item)  # never print a NUL or an escape
        check_key(keys, f"recipe override {item}")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise SpeechkernError(f"recipe override {item}: {k} is a value in {file}, not a section; set {k} "
                                      "itself")  # fmt: skip
        node[keys[-1]] = value
        origins[tuple(keys)] = f"recipe override {item}"
    data.setdefault("name", path.name if path.is_dir() else path.stem)
    return validate_recipe(data, source=str(file), origins=origins)


def load_run_recipe(run_dir: str | os.PathLike) -> Recipe:
    """The resolved recipe a run was trained with, ``run_dir/recipe.toml``, refused when it is cut short.

    Training writes it whole (:meth:`Recipe.to_toml`: every section, ending with the last key of the last one and a
    newline); a file missing a section, a key of the last section or its final newline was truncated, and reading
    it would take the defaults for what was lost. Raises SpeechkernError naming the file for that, and for what
    :func:`load_recipe` refuses.
    """
    file = Path(run_dir) / "recipe.toml"
    recipe = load_recipe(file)
    text = file.read_text(encoding="utf-8-sig")
    data = tomllib.loads(text)
    sections = [name for name in Recipe.model_fields if _section_at((name,)) is not None]
    lost = [f"[{name}]" for name in sections if not isinstance(data.get(name), dict)]
    if not lost:
        last = sections[-1]
        lost = [f"{last}.{key}" for key in _section_at((last,)).model_fields if key not in data[last]]
    if lost or not text.endswith("\n"):
        what = f"{lost[0]} is missing" if lost else "its last line is unfinished"
        raise SpeechkernError(f"{file}: is cut short ({what}); training writes a run's recipe whole, so this one was "
                              "truncated or damaged and would be read with defaults for what was lost; restore it "
                              "from a copy, or train the run again (overwrite=True)")  # fmt: skip
    return recipe


def recipe_keys() -> list[str]:
    """Every key a recipe has, dotted: ``name``, ``data.snrs``, ``kernel.epochs``, …"""
    keys = []
    for name in Recipe.model_fields:
        section = _section_at((name,))
        keys += [f"{name}.{k}" for k in section.model_fields] if section else [name]
    return keys


def check_key(keys: list[str], source: str) -> None:
    """Refuse a dotted key the recipe does not have, naming ``source`` (the --set option or the file) and the
    nearest valid keys."""
    model: type[BaseModel] | None = Recipe
    for depth, k in enumerate(keys):
        if model is None:
            parent = ".".join(keys[:depth])
            raise SpeechkernError(f"{source}: {parent} is a value, not a section; set {parent} itself")
        if k not in model.model_fields:
            raise SpeechkernError(f"{source}: unknown recipe key {'.'.join(keys)!r}; {_nearest_keys(keys)}")
        model = _section_at(tuple(keys[: depth + 1]))


def _nearest_keys(keys: list[str]) -> str:
    """``nearest valid keys: …``: the keys whose last part is spelt like the given key's, those of the section
    named first; else the keys of that section (or the top-level keys)."""
    import difflib

    by_tail: dict[str, list[str]] = {}
    for k in recipe_keys():
        by_tail.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    near = [k for t in difflib.get_close_matches(keys[-1], list(by_tail), n=5, cutoff=0.6) for k in by_tail[t]]
    near.sort(key=lambda k: not k.startswith(f"{keys[0]}.") if len(keys) > 1 else False)  # stable: keeps closeness
    if near:
        return f"nearest valid keys: {', '.join(near[:5])}"
    section = _section_at(tuple(keys[:-1])) if len(keys) > 1 else None
    if section is not None:
        return f"valid keys in [{keys[0]}]: {', '.join(sorted(section.model_fields))}"
    return f"valid keys: {', '.join(sorted(Recipe.model_fields))} (sections hold the rest, e.g. data.snrs)"


def validate_recipe(
    data: dict[str, Any], source: str = "recipe", origins: dict[tuple[str, ...], str] | None = None
) -> Recipe:
    """Validate a recipe dictionary; the first problem becomes a one-line SpeechkernError naming where the key
    came from: ``origins`` maps a dotted key (as a tuple) to its source, such as ``--set data.snrs=[0]``; other
    keys come from ``source``."""
    try:
        return Recipe.model_validate(data)
    except RecursionError:
        raise SpeechkernError(f"{source}: a value is nested too deeply; recipe values are numbers, strings and "
                              "flat lists") from None  # fmt: skip
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        loc = tuple(str(p) for p in first["loc"])
        field = _field_at(loc[:-1])
        if field is not None and typing.get_origin(field.annotation) in (typing.Union, types.UnionType):
            # a key of several forms ("auto" or a number): pydantic names each form's complaint under its own tag
            loc = loc[:-1]
            forms = [e["msg"] for e in errors if tuple(map(str, e["loc"]))[:-1] == loc]
            first = {**first, "loc": loc, "msg": "; or ".join(m[:1].lower() + m[1:] for m in forms)}
        key = ".".join(loc)
        source = next((o for k, o in (origins or {}).items() if loc[: len(k)] == k), source)
        if first["type"] == "extra_forbidden":
            raise SpeechkernError(f"{source}: unknown recipe key {key!r}; {_nearest_keys(list(loc))}") from None
        given = first.get("input")
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "list_type":
            message = _list_expected(key, given, _field_at(loc))
        section = _section_at(loc) if first["type"] == "value_error" and loc else None
        keys = [n for n in re.findall(r"(\w+) = ", message) if section is not None and n in section.model_fields]
        if keys:
            # a check across the keys of one section ("hop_length = 4000 is not below frame_length = 320"): name
            # the key that was overridden, if any, and where it came from, not the whole section and the recipe
            # file (the value may be a --set override)
            given_at = {
                n: next((o for k, o in (origins or {}).items() if (*loc, n)[: len(k)] == k), None) for n in keys
            }
            name = next((n for n in keys if given_at[n]), keys[0])
            value = given.get(name) if isinstance(given, dict) else None
            shown = f" = {value!r}" if value is not None else ""
            raise SpeechkernError(f"{given_at[name] or source}: recipe key {'.'.join((*loc, name))!r}{shown}: "
                                  f"{message}") from None  # fmt: skip
        if first["type"] == "value_error" and not first["loc"]:  # a check across sections names its own keys
            named = {k.strip() for k in message.split(":", 1)[0].split(",")}
            source = next((o for k, o in (origins or {}).items() if ".".join(k) in named), source)
            raise SpeechkernError(f"{source}: recipe key {message}") from None
        raise SpeechkernError(f"{source}: recipe key {key!r} = {given!r}: {message}") from None


def _list_expected(key: str, given: Any, field: Any) -> str:
    """What to write for a list-valued recipe key given something else: the value in brackets where the list
    takes it, or, for a list of bare words (the shell took the quotes of ``--set data.noises=["ssn"]``), the
    override in single quotes; else the key's default as an example."""
    from pydantic import TypeAdapter

    def takes(value: Any) -> bool:
        try:
            TypeAdapter(field.annotation).validate_python(value)
        except (ValidationError, AttributeError, TypeError):
            return False
        return field is not None

    if isinstance(given, str) and given.strip().startswith("[") and given.strip().endswith("]"):
        words = [w.strip().strip("'\"") for w in given.strip()[1:-1].split(",") if w.strip()]
        if takes(words):
            return (f"not a TOML list: strings in it need double quotes, which the shell removes unless the "
                    f"override is in single quotes: recipe override '{key}={json.dumps(words)}'")  # fmt: skip
    if isinstance(given, (str, int, float)) and not isinstance(given, bool) and takes([given]):
        return f"expected a list, even of one value: write {json.dumps([given])} (a TOML list)"
    example = field.get_default(call_default_factory=True) if field is not None else None
    return f"expected a list (a TOML list), such as {json.dumps(example if example else [0, 5])}"


def _field_at(loc: tuple) -> Any:
    """The pydantic field at the dotted location ``loc`` (section, key), or None."""
    model = _section_at(loc[:-1]) if loc else None
    return None if model is None else model.model_fields.get(str(loc[-1]))


def _section_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def _recipes_hint() -> str:
    return str(Path(__file__).resolve().parents[1] / "recipes")


def _dump_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for the recipe's two-level structure of scalars and lists."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for section, values in data.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None)
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # TOML takes UTF-8 as it is, but not JSON's surrogate pairs (emoji) or a raw DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
