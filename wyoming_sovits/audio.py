"""Audio in and out: decode, resample, tidy reference clips, spectrogram, int16 PCM.

Reference clips go through the same steps GPT-SoVITS applies, so prompts computed here
match the official pipeline: soundfile decoding with channels averaged, soxr "HQ"
resampling (what ``librosa.load(sr=...)`` does by default), the reference encoder's
linear spectrogram, and its peak guard. Output audio leaves as little-endian int16 PCM,
cut into chunks for Wyoming ``audio-chunk`` events. Nothing here knows about Wyoming.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:  # torch is imported lazily: enrollment and the CLI need none of it
    from torch import Tensor

SPEC_N_FFT = 2048
SPEC_HOP = 640
SPEC_PAD = (SPEC_N_FFT - SPEC_HOP) // 2  # 704: frames land on hop boundaries without centering


class AudioDecodeError(ValueError):
    """An audio file is missing, unreadable, or holds no samples."""


class AudioInputError(ValueError):
    """An in-memory signal or argument cannot be processed (wrong shape, rate, width)."""


class AudioTooLongError(AudioDecodeError):
    """An audio file lasts longer than the caller reads; it was not decoded whole.

    ``seconds`` is the file's length when its header tells it (None otherwise) and
    ``limit`` the most the caller accepts, both in seconds.
    """

    def __init__(self, path: Path, seconds: float | None, limit: float) -> None:
        length = f"lasts {_clock(seconds)}" if seconds is not None else "is longer"
        super().__init__(
            f"audio file {path} {length}, more than the {_clock(limit)} read here: "
            f"cut out the part you need (e.g. ffmpeg -i IN -ss START -t {limit:g} OUT.wav)"
        )
        self.path = path
        self.seconds = seconds
        self.limit = limit


def _clock(seconds: float) -> str:
    """``7.25 s`` below a minute, ``10:00 min`` above (what a person reads in a player)."""
    if seconds < 60.0:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d} min"


def load_audio(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode wav/flac/ogg/mp3 (anything libsndfile reads) to float32 mono and its rate.

    Channels are averaged, as ``librosa.load`` does for the reference's HuBERT input.
    With ``max_seconds``, a longer file raises ``AudioTooLongError`` without being decoded
    whole: the header's frame count is checked first, and at most one frame past the
    limit is ever read (for streams whose header has no length).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(path) as f:
            sr = int(f.samplerate)
            limit = -1 if max_seconds is None else math.floor(max_seconds * sr)
            if max_seconds is not None and f.frames > limit:
                raise AudioTooLongError(path, f.frames / sr, max_seconds)
            data = f.read(-1 if max_seconds is None else limit + 1, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError) as err:
        raise AudioDecodeError(
            f"cannot decode {path}: {err}; use WAV, FLAC, OGG/Vorbis or MP3"
        ) from err
    if max_seconds is not None and data.shape[0] > limit:  # the header had no length
        raise AudioTooLongError(path, None, max_seconds)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioDecodeError(f"audio file {path} contains no samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32), sr


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 audio with soxr "HQ", sized like ``librosa.resample``.

    The length is ``ceil(len(x) * sr_out / sr_in)`` (zero-padded or cut to it), so the
    HuBERT frame count and prompt-token count equal the reference's.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise AudioInputError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioInputError(f"resample expects mono (T,) audio, got shape {x.shape}")
    if sr_in == sr_out:
        return x.copy()
    out = soxr.resample(x, sr_in, sr_out, quality="HQ")
    n_out = math.ceil(len(x) * sr_out / sr_in)
    if len(out) < n_out:
        out = np.pad(out, (0, n_out - len(out)))
    return np.ascontiguousarray(out[:n_out], dtype=np.float32)


def _frame_rms(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    if len(x) < frame:
        return np.sqrt(np.mean(np.square(x, dtype=np.float64), keepdims=True))
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]  # (m, frame)
    return np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))  # (m,)


def trim_silence(
    x: np.ndarray, sr: int, threshold_db: float = -40.0, keep_ms: float = 50.0
) -> np.ndarray:
    """Cut leading and trailing silence from a reference clip.

    A 20 ms frame (10 ms hop) counts as sound when its RMS is within ``threshold_db`` of
    the loudest frame's, so the rule does not depend on the recording level. ``keep_ms``
    of the surrounding audio is kept so onsets and decays are not clipped. An all-silent
    clip comes back unchanged; rejecting it is the caller's decision.
    """
    if x.ndim != 1:
        raise AudioInputError(f"trim_silence expects mono (T,) audio, got shape {x.shape}")
    frame, hop = max(1, int(0.02 * sr)), max(1, int(0.01 * sr))
    rms = _frame_rms(x, frame, hop)
    loud = np.flatnonzero(rms >= rms.max() * 10.0 ** (threshold_db / 20.0))
    if rms.max() == 0.0 or len(loud) == 0:
        return x
    keep = int(keep_ms * sr / 1000)
    start = max(0, int(loud[0]) * hop - keep)
    end = min(len(x), int(loud[-1]) * hop + frame + keep)
    return x[start:end]


def loudness_normalize(
    x: np.ndarray, target_rms_db: float = -20.0, peak_limit: float = 0.95
) -> np.ndarray:
    """Scale a clip to ``target_rms_db`` dBFS RMS, lowering the gain if a peak would pass ``peak_limit``.

    RMS (not LUFS) is enough here: the aim is only that quiet and loud reference
    recordings reach the speaker models at similar levels without clipping. Silence is
    returned unchanged.
    """
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if rms == 0.0:
        return x.astype(np.float32, copy=True)
    gain = min(10.0 ** (target_rms_db / 20.0) / rms, peak_limit / peak)
    return (x * gain).astype(np.float32)


def peak_guard(x: np.ndarray) -> np.ndarray:
    """Tame a resampled reference that overshoots full scale (the reference's rule).

    When ``max|x| > 1`` the clip is divided by ``min(2, max|x|)``: overshoot from resampling
    is normalised away, while a clip that is hot by more than 2x is only halved.
    """
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        return (x / min(2.0, peak)).astype(np.float32)
    return x


def linear_spectrogram(wav32k: Tensor) -> Tensor:
    """Linear-magnitude STFT the SoVITS reference encoder expects.

    Reflect-pad 704 samples each side, 2048-point Hann STFT every 640 samples without
    centering, magnitude ``sqrt(re^2 + im^2 + 1e-8)``. ``wav32k`` (B, T) gives
    (B, 1025, frames); (T,) gives (1025, frames).
    """
    import torch

    if wav32k.dim() not in (1, 2):
        raise AudioInputError(f"expected (T,) or (B, T) audio, got shape {tuple(wav32k.shape)}")
    if wav32k.shape[-1] <= SPEC_PAD:
        raise AudioInputError(
            f"clip of {wav32k.shape[-1]} samples is too short for a spectrogram (need > {SPEC_PAD})"
        )
    batched = wav32k if wav32k.dim() == 2 else wav32k.unsqueeze(0)  # (B, T)
    padded = torch.nn.functional.pad(batched.unsqueeze(1), (SPEC_PAD, SPEC_PAD), mode="reflect")
    window = torch.hann_window(SPEC_N_FFT, dtype=batched.dtype, device=batched.device)
    spec = torch.stft(
        padded.squeeze(1),  # (B, T + 1408)
        SPEC_N_FFT,
        hop_length=SPEC_HOP,
        win_length=SPEC_N_FFT,
        window=window,
        center=False,
        return_complex=True,
    )  # (B, 1025, frames)
    mag = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-8)  # (B, 1025, frames)
    return mag if wav32k.dim() == 2 else mag[0]


def float_to_pcm16(x: np.ndarray) -> bytes:
    """Float audio in [-1, 1] -> little-endian int16 bytes; out-of-range samples are clipped.

    Scaled by 32767 and rounded, so +1 and -1 map to +/-32767 symmetrically.
    """
    scaled = np.rint(np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0) * 32767.0)
    return scaled.astype("<i2").tobytes()


def iter_chunks(pcm: bytes, samples_per_chunk: int, width: int = 2) -> Iterator[bytes]:
    """Split PCM bytes into chunks of ``samples_per_chunk`` samples; the last may be shorter."""
    if samples_per_chunk <= 0 or width <= 0:
        raise AudioInputError(
            f"samples_per_chunk and width must be positive, got {samples_per_chunk} and {width}"
        )
    if len(pcm) % width:
        raise AudioInputError(f"{len(pcm)} PCM bytes is not a whole number of {width}-byte samples")
    step = samples_per_chunk * width
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]
