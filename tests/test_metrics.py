"""Metrics that never flatter: refused length mismatches, NaN with a reason where a score is undefined, and the
pooled-over-frames mask measures beside the per-file means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speechkern import metrics, synth
from speechkern.errors import SpeechkernError
from speechkern.evaluate import FileResult, aggregate

SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return synth.synthesize(synth.TALKERS[1], 2.0, seed=3)


def test_a_truncated_output_is_refused_not_scored(speech):
    half = speech[: len(speech) // 2]
    with pytest.raises(SpeechkernError, match=r"more than one frame \(320 samples\)"):
        metrics.speech_scores(speech, half, SR)
    for score in (lambda: metrics.stoi(speech, half, SR), lambda: metrics.si_sdr(half, speech, SR)):
        with pytest.raises(SpeechkernError, match="samples"):
            score()
    with pytest.raises(SpeechkernError):
        metrics.pesq(speech, half, SR)


def test_a_length_difference_within_one_frame_is_trimmed(speech):
    shorter = speech[:-300]  # 18.75 ms
    s = metrics.speech_scores(speech, shorter, SR)
    assert s.problems == []
    assert s.stoi > 0.99 and s.si_sdr > 40 and s.pesq > 4.0


@pytest.mark.parametrize("seconds", [0.02, 0.25])
def test_stoi_on_too_little_speech_is_nan_with_a_reason(speech, seconds):
    n = int(seconds * SR)
    clean = speech[SR // 2 : SR // 2 + n]
    problems: list[str] = []
    assert math.isnan(metrics.stoi(clean, clean, SR, problems=problems))
    assert math.isnan(metrics.stoi(clean, clean, SR, extended=True, problems=problems))
    assert len(problems) == 2 and all("silence removal" in p for p in problems)


def test_stoi_with_enough_speech_is_a_number(speech):
    assert metrics.stoi(speech[:SR], speech[:SR], SR) == pytest.approx(1.0, abs=1e-6)


def test_all_zero_reference_gives_nan_with_reasons(speech):
    zeros = np.zeros_like(speech)
    s = metrics.speech_scores(zeros, speech, SR)
    assert all(math.isnan(v) for v in s.as_dict().values())
    assert any(p.startswith("si_sdr:") and "silent" in p for p in s.problems)
    assert any(p.startswith("stoi:") and "silent" in p for p in s.problems)
    assert any(p.startswith("pesq wb:") for p in s.problems)


def test_all_zero_output_has_no_si_sdr(speech):
    problems: list[str] = []
    assert math.isnan(metrics.si_sdr(np.zeros_like(speech), speech, SR, problems=problems))
    assert "processed signal is silent" in problems[0]


def test_a_constant_reference_is_not_called_all_zeros(speech):
    """oracle on a recording of DC alone said 'the clean reference is silent (all zeros)' of a file of 0.5s."""
    problems: list[str] = []
    assert math.isnan(metrics.si_sdr(speech, np.full_like(speech, 0.5), SR, problems=problems))
    assert problems == ["si_sdr: the clean reference is silent (constant, such as all zeros); SI-SDR is undefined"]


def test_si_sdr_reference_value():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(SR)
    ref -= ref.mean()
    noise = rng.standard_normal(SR)
    noise -= noise.mean()
    noise -= np.dot(noise, ref) / np.dot(ref, ref) * ref  # zero-mean and orthogonal to the reference
    est = 2.0 * ref + noise * (0.1 * np.linalg.norm(2.0 * ref) / np.linalg.norm(noise))
    assert metrics.si_sdr(est, ref, SR) == pytest.approx(20.0, abs=1e-6)  # target 2·ref, error 1/10 of its norm


def test_pooled_mask_measures_weigh_units_not_files():
    # file A: 10 units, every one wrong by 1; file B: 90 units, all right. Per-file mean 0.5, pooled 0.1.
    a_est, a_ref = np.ones((5, 2)), np.zeros((5, 2))
    b_est = b_ref = np.concatenate([np.ones((40, 2)), np.zeros((5, 2))])
    counts = [metrics.mask_counts(a_est, a_ref), metrics.mask_counts(b_est, b_ref)]
    pooled = metrics.aggregate_mask_counts(counts)
    assert pooled["mse_pooled"] == pytest.approx(10 / 100)
    # HIT: 80/80 speech units found; FA: 10 of 20 noise units → 1 − 0.5. Per-file: A 0 − 1, B 1 − 0 → mean 0.
    assert pooled["hit_fa_pooled"] == pytest.approx(0.5)
    per_file = [metrics.hit_minus_fa(a_est, a_ref), metrics.hit_minus_fa(b_est, b_ref)]
    assert np.mean(per_file) == pytest.approx(0.0)

    pairs = [(a_est, a_ref), (b_est, b_ref)]
    files = [
        FileResult(str(i), "babble_0dB", {"kernel": {"mse": metrics.mask_mse(e, r), "hit_fa": h}}, counts={"kernel": c})
        for i, ((e, r), h, c) in enumerate(zip(pairs, per_file, counts, strict=True))
    ]
    (row,) = aggregate(files)
    assert row["mse"] == pytest.approx(0.5) and row["mse_pooled"] == pytest.approx(0.1)
    assert row["hit_fa"] == pytest.approx(0.0) and row["hit_fa_pooled"] == pytest.approx(0.5)


def test_report_names_pooled_and_file_mean_columns():
    from speechkern.report import results_markdown

    md = results_markdown([{"condition": "c", "system": "kernel", "n_files": 2, "mse": 0.5, "mse_pooled": 0.1}])
    assert "MSE ×10⁻² (file mean)" in md and "MSE ×10⁻² (pooled)" in md
    assert "| 50.00 | 10.00 |" in md
