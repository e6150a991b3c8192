"""Audio utilities: decoding, resampling, reference tidying, spectrogram, PCM out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wyoming_sovits.audio import (
    AudioDecodeError,
    AudioInputError,
    AudioTooLongError,
    float_to_pcm16,
    iter_chunks,
    linear_spectrogram,
    load_audio,
    loudness_normalize,
    peak_guard,
    resample,
    trim_silence,
)


def tone(n: int, sr: int, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(n) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


# --- spectrogram and resampling against the contract ---------------------------------


def test_linear_spectrogram_matches_golden(contract_dir: Path) -> None:
    with np.load(contract_dir / "golden_spectrogram.npz") as z:
        wav, golden = torch.from_numpy(z["wav32k"]), torch.from_numpy(z["spec"])
    spec = linear_spectrogram(wav)
    assert spec.shape == golden.shape == (1, 1025, 100)
    assert rel_l2(spec, golden) < 1e-4
    assert torch.equal(linear_spectrogram(wav[0]), spec[0])


def test_pipeline_reference_resample_and_spectrogram(contract_dir: Path, tmp_path: Path) -> None:
    """The pipeline golden's 4 s float WAV -> 16 kHz exactly as librosa soxr_hq, and its spectrogram."""
    with np.load(contract_dir / "pipeline" / "case_a.npz") as z:
        ref_wav, wav16k, ref_spec = z["ref_wav"], z["wav16k"], z["ref_spec"]
    path = tmp_path / "ref.wav"
    sf.write(path, ref_wav, 32000, subtype="FLOAT")
    loaded, sr = load_audio(path)
    assert sr == 32000 and np.array_equal(loaded, ref_wav)
    down = resample(loaded, sr, 16000)
    assert down.dtype == np.float32 and down.shape == wav16k.shape
    np.testing.assert_allclose(down, wav16k, rtol=0, atol=1e-6)
    spec = linear_spectrogram(torch.from_numpy(peak_guard(loaded))[None])
    assert rel_l2(spec, torch.from_numpy(ref_spec)) < 1e-4


def test_spectrogram_rejects_bad_input() -> None:
    with pytest.raises(AudioInputError, match="too short"):
        linear_spectrogram(torch.zeros(1, 704))
    with pytest.raises(AudioInputError, match="shape"):
        linear_spectrogram(torch.zeros(1, 1, 4000))


@pytest.mark.parametrize(
    ("sr_in", "sr_out", "n"), [(44100, 16000, 44101), (22050, 32000, 999), (16000, 16000, 5)]
)
def test_resample_length_and_content(sr_in: int, sr_out: int, n: int) -> None:
    x = tone(n, sr_in, freq=300.0)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert len(y) == -(-n * sr_out // sr_in)
    if n > 1000:  # a clean tone keeps its level through a good resampler
        core = slice(len(y) // 10, -len(y) // 10)
        assert abs(np.sqrt(np.mean(y[core] ** 2)) - 0.5 / np.sqrt(2)) < 1e-2


def test_resample_rejects_bad_arguments() -> None:
    with pytest.raises(AudioInputError, match="positive"):
        resample(np.zeros(10, np.float32), 0, 16000)
    with pytest.raises(AudioInputError, match="mono"):
        resample(np.zeros((2, 10), np.float32), 32000, 16000)


# --- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "atol"),
    [
        (".wav", "WAV", "PCM_16", 1e-4),
        (".flac", "FLAC", "PCM_16", 1e-4),
        (".ogg", "OGG", "VORBIS", 0.05),
        (".mp3", "MP3", "MPEG_LAYER_III", 0.1),
    ],
)
def test_load_formats(tmp_path: Path, suffix: str, fmt: str, subtype: str, atol: float) -> None:
    x = tone(24000, 24000)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, x, 24000, format=fmt, subtype=subtype)
    y, sr = load_audio(path)
    assert sr == 24000 and y.dtype == np.float32 and y.ndim == 1
    # Lossy codecs add delay/padding; compare level and a well-inside window only.
    assert abs(len(y) - len(x)) < 3000
    assert abs(np.sqrt(np.mean(y**2)) - np.sqrt(np.mean(x**2))) < atol
    if fmt in ("WAV", "FLAC"):
        np.testing.assert_allclose(y, x, atol=atol)


CODECS = [
    ("wav", "WAV", "PCM_16"),
    ("flac", "FLAC", "PCM_16"),
    ("ogg", "OGG", "VORBIS"),
    ("opus", "OGG", "OPUS"),  # phone voice memos; libsndfile's Opus has no 44.1 kHz
    ("mp3", "MP3", "MPEG_LAYER_III"),
]


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "sr"),
    [
        (*codec, sr)
        for codec in CODECS
        for sr in (8000, 16000, 44100, 48000)
        if not (codec[2] == "OPUS" and sr == 44100)
    ],
)
def test_load_rates_and_stereo(
    tmp_path: Path, suffix: str, fmt: str, subtype: str, sr: int
) -> None:
    """Every rate people record at comes back at that rate, stereo mixed to the mean."""
    left, right = tone(sr, sr, 440.0, amp=0.4), tone(sr, sr, 440.0, amp=0.2)
    path = tmp_path / f"clip.{suffix}"
    sf.write(path, np.stack([left, right], axis=1), sr, format=fmt, subtype=subtype)
    y, rate = load_audio(path)
    assert rate == sr and y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - sr) <= sr // 10  # lossy codecs may pad a little
    core = y[len(y) // 5 : -len(y) // 5]
    # Mean of 0.4 and 0.2 amplitude: RMS 0.212 (left only would be 0.283, right 0.141).
    assert abs(np.sqrt(np.mean(core**2)) - 0.3 / np.sqrt(2)) < 0.01
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core))))
    assert abs(np.argmax(spectrum) * sr / len(core) - 440.0) < 5.0  # same pitch: no rate mix-up
    if fmt in ("WAV", "FLAC"):
        np.testing.assert_allclose(y, (left + right) / 2, atol=1e-4)


def test_long_file_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ten-minutes.wav"
    sf.write(path, np.zeros(600 * 8000, np.int16), 8000, subtype="PCM_16")  # 9.6 MB, cheap
    reads: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> object:
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    with pytest.raises(
        AudioTooLongError, match=r"ten-minutes\.wav lasts 10:00 min.*5:00 min"
    ) as err:
        load_audio(path, max_seconds=300)
    assert (err.value.seconds, err.value.limit) == (600.0, 300)
    assert reads == []  # nothing decoded
    assert isinstance(err.value, AudioDecodeError)  # callers that catch decode errors see it

    short = tmp_path / "two-seconds.wav"
    sf.write(short, tone(16000, 8000), 8000, subtype="PCM_16")
    assert len(load_audio(short, max_seconds=2.0)[0]) == 16000  # exactly at the limit: fine
    assert reads == [16001]  # a capped read asks for one frame past the limit, no more
    with pytest.raises(AudioTooLongError, match=r"lasts 2\.00 s, more than the 1\.99 s"):
        load_audio(short, max_seconds=1.99)


def test_load_stereo_is_channel_mean(tmp_path: Path) -> None:
    left, right = tone(8000, 16000, 200.0), tone(8000, 16000, 500.0, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y, sr = load_audio(path)
    assert sr == 16000 and y.shape == (8000,)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioDecodeError, match=r"not found: .*missing\.wav"):
        load_audio(missing)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" + bytes(range(256)))
    with pytest.raises(AudioDecodeError, match=r"cannot decode .*corrupt\.wav"):
        load_audio(corrupt)
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioDecodeError, match=r"notes\.mp3"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioDecodeError, match=r"empty\.wav contains no samples"):
        load_audio(empty)


# --- reference tidying ---------------------------------------------------------------


def test_trim_silence_keeps_sound_and_margin() -> None:
    sr = 16000
    x = np.concatenate([np.zeros(sr), tone(sr, sr), np.full(sr, 1e-5, np.float32)])
    y = trim_silence(x, sr, threshold_db=-40.0, keep_ms=50.0)
    margin = int(0.05 * sr)
    assert sr + 2 * margin - 400 <= len(y) <= sr + 2 * margin + 400
    assert np.allclose(y[:100], 0.0)  # the kept margin is the leading silence
    silent = np.zeros(1000, np.float32)
    assert trim_silence(silent, sr) is silent


def test_loudness_normalize_rms_and_peak_cap() -> None:
    quiet = tone(16000, 16000, amp=0.01)
    y = loudness_normalize(quiet, target_rms_db=-20.0, peak_limit=0.95)
    assert abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 20.0) < 0.01
    spiky = np.zeros(16000, np.float32)
    spiky[100] = 0.5
    z = loudness_normalize(spiky, target_rms_db=-20.0, peak_limit=0.95)
    assert np.isclose(np.abs(z).max(), 0.95)
    assert np.array_equal(loudness_normalize(np.zeros(10, np.float32)), np.zeros(10))


def test_peak_guard() -> None:
    ok = tone(100, 16000, amp=0.9)
    assert peak_guard(ok) is ok
    hot = np.array([0.5, -1.5, 1.0], np.float32)
    np.testing.assert_allclose(peak_guard(hot), hot / 1.5)
    very_hot = np.array([4.0, -1.0], np.float32)
    np.testing.assert_allclose(peak_guard(very_hot), very_hot / 2.0)


# --- output ----------------------------------------------------------------------------


def test_float_to_pcm16_scaling_and_clipping() -> None:
    x = np.array([0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 1e-6], np.float32)
    pcm = float_to_pcm16(x)
    values = np.frombuffer(pcm, dtype="<i2")
    assert values.tolist() == [0, 32767, -32767, 16384, 32767, -32767, 0]
    assert len(pcm) == 2 * len(x)


def test_iter_chunks() -> None:
    pcm = bytes(range(20))  # 10 int16 samples
    chunks = list(iter_chunks(pcm, samples_per_chunk=4))
    assert [len(c) for c in chunks] == [8, 8, 4]
    assert b"".join(chunks) == pcm
    assert list(iter_chunks(b"", 4)) == []
    with pytest.raises(AudioInputError, match="whole number"):
        list(iter_chunks(b"\x00\x01\x02", 4))
    with pytest.raises(AudioInputError, match="positive"):
        list(iter_chunks(pcm, 0))
