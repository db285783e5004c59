"""Hostile use of the enhancement and evaluation side as a newcomer would try it: odd arrays through the Python
API, damaged run folders and manifests, outputs that are folders, and the benchmark scripts' odd arguments."""

from __future__ import annotations

import numpy as np
import pytest

from speechkern.enhance import apply_mask, enhance_signal
from speechkern.errors import SpeechkernError


@pytest.fixture(scope="module")
def shipped():
    from speechkern.models.select import SHIPPED, find_model

    return find_model(SHIPPED)[0]


def _speechlike(n: int = 16000) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(n) * 0.1).astype(np.float32)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, r"^y=None: expected a waveform"),
        ("noisy.wav", r"^y='noisy.wav': expected a waveform"),
        (np.float32(0.1), r"^y: shape \(\); expected a mono waveform"),
        (np.zeros(0, np.float32), r"^y: holds no samples"),
        ((_speechlike() * 32767).astype(np.int16), r"^y: int16 samples; .* / 32768, or read the file"),
        (((_speechlike() + 1) * 127).astype(np.uint8), r"^y: uint8 samples; .*- 128\) / 128"),
        (_speechlike() > 0, r"^y: bool samples; expected floating-point samples with full scale 1\.0; read"),
        (_speechlike().astype(np.complex64), r"^y: complex \(a spectrum\?\) values"),
        (np.array([_speechlike()], dtype=object), r"^y: object values"),
        (np.stack([_speechlike()] * 2), r"^y: shape \(2, 16000\); .*average the channels"),
        (np.stack([_speechlike()] * 2).T, r"^y: shape \(16000, 2\); .*average the channels"),
        (np.where(np.arange(16000) == 7, np.nan, _speechlike()), r"^y: holds 1 NaN .* the first at index 7"),
        (_speechlike().astype(np.float64) * 1e300, r"^y: holds 16000 NaN or infinite sample\(s\) \(or beyond float32"),
    ],
    ids=["none", "str", "scalar", "empty", "int16", "uint8", "bool", "complex", "object", "2d", "2d-T", "nan", "huge"],
)
def test_enhance_signal_refuses_what_is_no_float_mono_waveform_in_one_line(shipped, value, says):
    """int16 arrays (scipy.io.wavfile) were enhanced as if full scale were 32768.0 and came back as float32 at that
    scale; complex, object, scalar, str and None inputs stopped in numpy's TypeError; 2-D arrays were refused by
    the feature code without naming the parameter or what to do; float64 samples beyond float32 were 'NaN'."""
    with pytest.raises(SpeechkernError, match=says) as err:
        enhance_signal(shipped, value)
    assert "\n" not in str(err.value)


def test_enhance_signal_takes_float_lists_and_any_float_width_alike(shipped):
    y = _speechlike()
    want = enhance_signal(shipped, y)
    assert want.dtype == np.float32 and want.shape == y.shape
    np.testing.assert_allclose(enhance_signal(shipped, y.astype(np.float64)), want, atol=1e-6)
    np.testing.assert_allclose(enhance_signal(shipped, y.tolist()), want, atol=1e-6)


@pytest.mark.parametrize(
    ("mask", "says"),
    [
        (lambda m: m.T, r"^mask: shape \(64, 101\) does not fit .* expected \(n_frames, n_units\) = \(101, 64\)"),
        (lambda m: m[:-3], r"^mask: shape \(98, 64\) does not fit"),
        (lambda m: m[:, 0], r"^mask: shape \(101,\) does not fit"),
        (lambda m: np.where(m > 0.5, np.nan, m), r"^mask: holds NaN or infinite values"),
        (lambda m: m.astype(np.complex64), r"^mask: complex64 values"),
        (lambda m: "ones", r"^mask: <U4 values"),
    ],
    ids=["transposed", "frames", "1d", "nan", "complex", "str"],
)
def test_apply_mask_names_the_documented_orientation(shipped, mask, says):
    """A mask (n_frames, n_units) of the wrong shape was reported transposed ('mask of shape (101, 64) … expected
    (64, 101)' for a transposed one, i.e. told to pass what it had passed); a list mask stopped in AttributeError."""
    y = _speechlike()
    good = shipped.mask(shipped.features(y, 16000))
    with pytest.raises(SpeechkernError, match=says):
        apply_mask(y, mask(good), shipped)
    np.testing.assert_allclose(apply_mask(y, good.tolist(), shipped), apply_mask(y, good, shipped), atol=1e-6)
    with pytest.raises(SpeechkernError, match=r"^mixture: int16 samples"):
        apply_mask((y * 32767).astype(np.int16), good, shipped)
