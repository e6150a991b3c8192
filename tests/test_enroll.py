"""Enrollment: choosing a 3–10 s reference clip from real speech and writing a voice folder.

Speech comes from the LibriVox clips of Debian's ``pocketsphinx-testdata`` (public domain
recordings); the quality rules are also checked on synthetic signals without the VAD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from wyoming_sovits import enroll
from wyoming_sovits.__main__ import main as cli_main
from wyoming_sovits.enroll import EnrollmentError, Segment, TranscriptNeededError
from wyoming_sovits.voices import load_voice

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIPS = ["0870", "0880", "0890", "0920", "0930"]  # 7.1, 3.0, 5.3, 6.05, 3.3 s
TEXT_0870 = (
    "And Mister John Dashwood had then leisure to consider how much there might be "
    "prudently in his power to do for them."
)
PAUSE_S = 0.8
SR = 16000

if not LIBRIVOX.is_dir():  # CI installs it (.ci/run); a skip would hide the missing data
    raise RuntimeError("needs Debian pocketsphinx-testdata: apt-get install pocketsphinx-testdata")


def librivox(clip: str) -> Path:
    return LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{clip}.wav"


def long_recording(clips: list[str] = CLIPS) -> tuple[np.ndarray, list[Segment]]:
    """The clips joined by 0.8 s of faint room noise; also where each clip lies."""
    rng = np.random.default_rng(0)
    parts, spans, t = [], [], 0.0
    for clip in clips:
        audio, sr = sf.read(librivox(clip), dtype="float32")
        assert sr == SR
        spans.append(Segment(t, t + len(audio) / SR))
        parts += [audio, rng.normal(0.0, 3e-4, int(PAUSE_S * SR)).astype(np.float32)]
        t += len(audio) / SR + PAUSE_S
    return np.concatenate(parts), spans


def write_wav(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    sf.write(path, audio, sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("rec") / "minute.wav", long_recording()[0])


@pytest.fixture(scope="module")
def long_rec(long_wav: Path) -> enroll.Recording:
    return enroll.load_recording(long_wav)


def _level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def test_long_recording_yields_clip_between_pauses(long_rec: enroll.Recording) -> None:
    choice = enroll.choose_clips(long_rec, aux_clips=2)
    main = choice.main.segment
    assert choice.mode == "chosen"
    assert 5.0 <= main.duration <= 8.0  # the preferred length exists, so it wins
    assert choice.speech_s > 20.0
    _, spans = long_recording()
    # The clip holds whole utterances: it lies inside one source clip, never across a cut.
    assert any(s.start - 0.05 <= main.start and main.end <= s.end + 0.05 for s in spans)
    speech_db = _level_db(long_rec.audio[int(main.start * SR) : int(main.end * SR)])
    for edge in (main.start, main.end):  # 40 ms around each edge is a pause
        around = long_rec.audio[int((edge - 0.02) * SR) : int((edge + 0.02) * SR)]
        assert _level_db(around) < speech_db - 15.0
    assert len(choice.aux) == 2
    segments = [main, *(a.segment for a in choice.aux)]
    assert not any(a.overlaps(b) for i, a in enumerate(segments) for b in segments[i + 1 :])
    assert all(enroll.MIN_CLIP_S <= s.duration <= enroll.MAX_CLIP_S for s in segments)


def test_enroll_long_recording_in_two_steps(long_wav: Path, tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    with pytest.raises(TranscriptNeededError, match="--clip") as info:
        enroll.enroll_voice("jane", long_wav, text=None, language="en_US", voices_dir=voices)
    assert not (voices / "jane").exists()
    seg = info.value.choice.main.segment
    with pytest.raises(TranscriptNeededError, match="transcript of that clip only"):
        enroll.enroll_voice("jane", long_wav, text="Hello.", language="en", voices_dir=voices)

    profile = enroll.enroll_voice(
        "jane",
        long_wav,
        text=f"  {TEXT_0870} ",
        language=["en_US", "en_GB"],
        voices_dir=voices,
        display_name="Jane",
        clip=(seg.start, seg.end),
        aux_clips=1,
    )
    assert profile == load_voice(voices / "jane")
    assert profile.display_name == "Jane"
    assert profile.languages == ("en_US", "en_GB")
    assert profile.reference.text == TEXT_0870
    assert profile.reference.language == "en"
    assert [p.name for p in profile.reference.aux_audio] == ["aux1.wav"]
    audio, sr = sf.read(profile.reference.audio, dtype="float32")
    assert sr == 32000  # 16 kHz input is written at the SoVITS rate
    assert len(audio) / sr == pytest.approx(seg.duration, abs=0.01)
    assert np.max(np.abs(audio)) <= 0.95
    assert _level_db(audio) == pytest.approx(-20.0, abs=0.5)
    assert sorted(p.name for p in (voices / "jane").iterdir()) == [
        "aux1.wav",
        "reference.wav",
        "voice.yaml",
    ]


def test_short_recording_is_used_whole_and_replaced_keeping_settings(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    profile = enroll.enroll_voice(
        "austen", librivox("0870"), text=TEXT_0870, language="en_US", voices_dir=voices
    )
    assert profile.reference.aux_audio == ()
    assert 6.5 < sf.info(profile.reference.audio).duration < 7.1  # edges trimmed to pauses
    with pytest.raises(EnrollmentError, match="--force"):
        enroll.enroll_voice(
            "austen", librivox("0870"), text=TEXT_0870, language="en_US", voices_dir=voices
        )
    data = yaml.safe_load(profile.path.read_text())
    data["synthesis"] = {"top_k": 5}
    profile.path.write_text(yaml.safe_dump(data))
    again = enroll.enroll_voice(
        "austen",
        librivox("0920"),
        text="Had he married a more amiable woman, he might have been made still more "
        "respectable than he was.",
        language="en_US",
        voices_dir=voices,
        overwrite=True,
    )
    assert again.synthesis.top_k == 5
    assert again.reference.text.startswith("Had he married")


def test_clipped_recording_is_rejected(tmp_path: Path) -> None:
    audio, _ = long_recording(["0870", "0890"])
    wav = write_wav(tmp_path / "loud.wav", np.clip(audio * 8.0, -1.0, 1.0))
    with pytest.raises(EnrollmentError, match=r"clipped .*record less loud"):
        enroll.enroll_voice("x", wav, text=TEXT_0870, language="en_US", voices_dir=tmp_path)
    assert not (tmp_path / "x").exists()


def _chords(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    for i, chord in enumerate([(261.6, 329.6, 392.0), (220.0, 261.6, 329.6)] * int(seconds)):
        part = slice(i * SR, (i + 1) * SR)
        for f0 in chord:
            for h in range(1, 6):
                out[part] += 0.05 / h * np.sin(2 * np.pi * f0 * h * t[part])
    return out.astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("silence", "no speech found"), ("noise", "no speech found"), ("chords", "no speech")],
)
def test_no_speech_is_rejected(kind: str, message: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    signal = {
        "silence": np.zeros(6 * SR, np.float32),
        "noise": rng.normal(0.0, 0.05, 6 * SR).astype(np.float32),
        "chords": _chords(6.0),
    }[kind]
    wav = write_wav(tmp_path / f"{kind}.wav", signal)
    with pytest.raises(EnrollmentError, match=message):
        enroll.enroll_voice("x", wav, text="Hello there.", language="en", voices_dir=tmp_path)


def test_too_little_speech_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match=r"only 2\.\d s of speech .*at least 3 s"):
        enroll.enroll_voice(
            "x", librivox("0880"), text="He was not.", language="en", voices_dir=tmp_path
        )


@pytest.mark.parametrize(
    ("name", "language", "text", "message"),
    [
        ("Grandma Erna", "en_US", "Hi.", "ASCII id"),
        ("../escape", "en_US", "Hi.", "ASCII id"),
        ("erna", "english", "Hi.", "not a code such as en_US"),
        ("erna", "en_US", "   ", "empty"),
    ],
)
def test_bad_requests_fail_before_analysis(
    name: str, language: str, text: str, message: str, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.wav"  # never opened: the request is checked first
    with pytest.raises(EnrollmentError, match=message):
        enroll.enroll_voice(name, missing, text=text, language=language, voices_dir=tmp_path)


def test_unreadable_audio_and_overlong_text(tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match="not found"):
        enroll.enroll_voice(
            "x", tmp_path / "nope.wav", text="Hi.", language="en", voices_dir=tmp_path
        )
    with pytest.raises(EnrollmentError, match="transcript of that clip only"):
        enroll.enroll_voice(
            "x", librivox("0890"), text=TEXT_0870 * 3, language="en", voices_dir=tmp_path
        )


def test_regions_merge_short_gaps_and_drop_blips() -> None:
    chunk = enroll.CHUNK_S
    probs = np.zeros(200, np.float32)
    probs[10:50] = 0.9  # speech
    probs[50:54] = 0.4  # hysteresis keeps it going
    probs[54:58] = 0.1  # 0.13 s gap: merged
    probs[58:100] = 0.9
    probs[130:132] = 0.9  # 64 ms blip: dropped
    probs[150:190] = 0.8
    regions = enroll.speech_regions(probs)
    assert [(round(r.start / chunk), round(r.end / chunk)) for r in regions] == [
        (10, 100),
        (150, 190),
    ]


def test_candidate_windows_respect_length_and_long_pauses() -> None:
    regions = [Segment(0.5, 3.0), Segment(3.5, 6.0), Segment(8.0, 12.0), Segment(12.4, 25.0)]
    windows = enroll.candidate_windows(regions, duration=26.0)
    assert Segment(0.25, 6.15) in windows  # two phrases joined across a 0.5 s pause
    assert Segment(3.25, 6.15) not in windows  # 2.9 s: too short on its own
    assert all(3.0 <= w.duration <= 10.0 for w in windows)
    assert not any(w.start < 6.0 < 8.0 < w.end for w in windows)  # 2 s pause never inside
    assert not any(w.end > 12.6 for w in windows)  # the 12.6 s phrase cannot fit


def _synthetic(audio: np.ndarray, noise_db: float = -90.0) -> enroll.Recording:
    """A recording the VAD calls all speech, to test the quality rules alone."""
    probs = np.full(len(audio) // enroll.VAD_CHUNK, 0.9, np.float32)
    return enroll.Recording(audio, SR, audio, probs, noise_db)


def _voice_like(seconds: float, level: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    harmonics = sum(np.sin(h * phase) / h for h in range(1, 20))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t) ** 2  # syllables
    return (level * harmonics * envelope).astype(np.float32)


@pytest.mark.parametrize(
    ("make", "noise_db", "message"),
    [
        (lambda: _voice_like(6.0), -90.0, None),
        (lambda: np.clip(_voice_like(6.0, 1.0), -1, 1), -90.0, "clipped"),
        (lambda: _voice_like(6.0, 0.001), -120.0, "too quiet"),
        (lambda: np.random.default_rng(2).normal(0, 0.1, 6 * SR).astype(np.float32), -90.0,
         "like noise"),
        (lambda: _voice_like(6.0), -32.0, "noisy"),
        (lambda: _voice_like(6.0) * np.repeat([1.0, 0.02] * 3, SR).astype(np.float32),
         -120.0, "unsteady"),
        (lambda: _voice_like(12.0), -90.0, "3–10 s"),
    ],
)  # fmt: skip
def test_quality_rules(make: object, noise_db: float, message: str | None) -> None:
    audio = make()  # type: ignore[operator]
    cand = enroll.score_window(_synthetic(audio, noise_db), Segment(0.0, len(audio) / SR))
    if message is None:
        assert cand.problem is None and cand.score > 0.5
    else:
        assert cand.problem is not None and message in cand.problem


def test_ten_minute_recording_is_refused_before_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    long_file = tmp_path / "podcast.wav"
    sf.write(long_file, np.zeros(600 * 8000, np.int16), 8000, subtype="PCM_16")  # cheap: 8 kHz

    def no_analysis(*args: object, **kwargs: object) -> None:
        raise AssertionError("a refused recording must not reach the VAD")

    monkeypatch.setattr(enroll, "analyse", no_analysis)
    with pytest.raises(EnrollmentError, match=r"podcast\.wav lasts 10:00 min.*at most 5:00 min"):
        enroll.enroll_voice("x", long_file, text="Hi.", language="en", voices_dir=tmp_path)
    assert not (tmp_path / "x").exists()

    code = cli_main(["voice", "add", "x", "--audio", str(long_file), "--language", "en_US",
                 "--voices-dir", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "lasts 10:00 min" in err and "ffmpeg -i podcast.wav" in err
