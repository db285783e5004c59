"""Audio I/O with clear errors, and the content-addressed cache."""

from __future__ import annotations

import numpy as np
import pytest

from speechkern import audio
from speechkern.cache import ArrayCache, content_key
from speechkern.errors import SpeechkernError


def test_save_load_resample_and_mixdown(tmp_path):
    t = np.arange(48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32) * 0.5
    audio.save(tmp_path / "a.wav", stereo, 48000)
    y, sr = audio.load(tmp_path / "a.wav", sr=16000)
    assert sr == 16000 and y.ndim == 1 and abs(len(y) - 16000) <= 1
    assert np.max(np.abs(y)) == pytest.approx(0.375, abs=0.01)
    both, sr = audio.load(tmp_path / "a.wav", sr=None, mono=False)
    assert both.shape == (2, 48000) and sr == 48000


def test_errors_name_the_file(tmp_path):
    with pytest.raises(SpeechkernError, match="missing.wav: no such file"):
        audio.load(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(SpeechkernError, match="text.wav: not a readable audio file"):
        audio.load(tmp_path / "text.wav")
    audio.save(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(SpeechkernError, match="empty.wav: the file holds no samples"):
        audio.load(tmp_path / "empty.wav")
    with pytest.raises(SpeechkernError, match="exists already"):
        audio.save(tmp_path / "empty.wav", np.zeros(10, np.float32), 16000)


def test_find_audio_recurses_and_sorts(tmp_path):
    for rel in ("b/x.WAV", "a/y.flac", "a/z.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    audio.save(tmp_path / "b/x.WAV", np.zeros(10, np.float32), 16000)
    audio.save(tmp_path / "a/y.flac", np.zeros(10, np.float32), 16000)
    (tmp_path / "a/z.txt").write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in audio.find_audio(tmp_path)] == ["a/y.flac", "b/x.WAV"]


def test_cache_round_trip_and_keys(tmp_path):
    cache = ArrayCache(tmp_path)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    key = content_key({"cfg": 1}, a)
    assert key != content_key({"cfg": 2}, a)
    assert key != content_key({"cfg": 1}, a.astype(np.float64))
    assert key == content_key({"cfg": 1}, a.copy())
    assert cache.get(key) is None
    cache.put(key, {"x": a})
    np.testing.assert_array_equal(cache.get(key)["x"], a)
    assert not list(tmp_path.rglob("*.part"))
    assert ArrayCache(None).get(key) is None
