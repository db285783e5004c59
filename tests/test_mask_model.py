"""The mask model's one feature computation, shared by training, evaluate and enhance."""

from __future__ import annotations

import numpy as np
import pytest

from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig
from speechkern.models.mask_model import waveform_features


def test_waveform_features_refuse_another_sample_rate():
    y = np.zeros(8000, np.float32)
    with pytest.raises(SpeechkernError, match=r"8000 Hz: the features expect 16000 Hz; resample"):
        waveform_features(y, 8000, FeatureConfig(sr=16000))


def test_enhance_and_evaluate_see_the_same_features(tiny_run, monkeypatch):
    """enhance (MaskModel.features on a block) and evaluate (the cached frames of compute_example) compute one
    mixture's features with the same function, so they are equal; and enhance's mask is to_mask of them."""
    from speechkern import dataset, enhance, features
    from speechkern.mixtures import read_manifest
    from speechkern.models.mask_model import MaskModel

    _, root, _ = tiny_run
    model = MaskModel.load(root / "run" / "models" / "kernel")
    m = read_manifest(root / "run" / "manifests" / "test.jsonl")[0]
    mix, _, _ = m.build()
    evaluated = dataset.compute_example(m, model.feature_config, model.target_config, None)["features"]
    np.testing.assert_array_equal(model.features(mix, m.sr), evaluated)
    masks = []
    monkeypatch.setattr(enhance, "_resynthesize", lambda y, mask, _fc, _tc: masks.append(mask) or y)
    enhance.enhance_signal(model, mix)
    dc_free = mix - np.mean(mix, dtype=np.float64).astype(np.float32)  # enhance removes a DC offset first
    expected = model.features(dc_free, m.sr, gain=features.level_gain(dc_free, model.feature_config.level_dbfs))
    np.testing.assert_array_equal(masks[0], model.to_mask(model.predict(model.inputs(expected))))
