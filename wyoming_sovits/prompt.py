"""Voice prompts: what a reference clip and its transcript become before any synthesis.

A prompt is everything the GPT and the SoVITS decoder need from a voice, computed once:

- prompt tokens: the clip at 16 kHz (soxr HQ, like ``librosa.load``), checked to be 3–10 s,
  followed by 0.6 s of zeros, through HuBERT and the SoVITS quantizer (``extract_latent``);
- the transcript's phone ids and per-phone BERT features (the GPT reads them before the
  request text, so the transcript must be what the clip actually says);
- ``ge``, the global voice vector: the 32 kHz linear spectrogram (peak-guarded) and, for
  v2Pro/v2ProPlus, the speaker-verification embedding of the 16 kHz signal, averaged over
  the main clip and any aux clips.

Preparing a prompt runs HuBERT, BERT and the speaker model, so prompts are kept in memory
and on disk (``.npz``, read with ``allow_pickle=False``), keyed by a hash of the clips'
bytes, the transcript, its language and the identity of every model file involved: a
restart, or a second server on the same cache folder, does no reference work.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .audio import (
    AudioDecodeError,
    AudioTooLongError,
    linear_spectrogram,
    load_audio,
    peak_guard,
    resample,
)
from .models.bert import BertFeatures
from .models.ssl import HubertEncoder
from .models.sv import SpeakerEncoder
from .models.vits import SoVITS
from .text import Phones, to_phones
from .text.split import SPLITS

_LOGGER = logging.getLogger(__name__)

SSL_RATE = 16000
OUTPUT_RATE = 32000
MIN_REFERENCE_SAMPLES = 3 * SSL_RATE  # the reference rejects clips outside 3–10 s (at 16 kHz)
MAX_REFERENCE_SAMPLES = 10 * SSL_RATE
# Most seconds decoded from a clip file: a main clip past this is refused from its header
# (the exact 3–10 s rule is applied after resampling); aux clips, which upstream does not
# limit, only shape the timbre, so they may be longer, but not unbounded.
MAX_REFERENCE_DECODE_S = 11.0
MAX_AUX_S = 30.0
# Bumped whenever what is stored, or how it is computed, changes: old files are then ignored.
CACHE_FORMAT = 1
_ARRAYS = ("phone_ids", "bert", "tokens", "ge")


class ReferenceAudioError(ValueError):
    """A reference clip cannot serve as a voice prompt (unreadable, too short or too long)."""


@dataclass(frozen=True)
class ReferenceAudio:
    """One clip, ready for the reference models.

    ``wav16k`` (T16,) feeds HuBERT and the speaker model; ``wav32k`` (T32,) the spectrogram.
    """

    path: Path
    wav16k: np.ndarray
    wav32k: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.wav16k) / SSL_RATE


def load_reference(path: Path, *, check_length: bool = True) -> ReferenceAudio:
    """Decode ``path`` (mono-mixed) at 16 and 32 kHz; the main clip must last 3–10 s.

    The length rule is the reference's (measured at 16 kHz): shorter clips give too few
    prompt tokens to carry a voice, longer ones crowd the GPT's context. A file that is
    far too long (a whole recording named as a clip) is refused without decoding it;
    aux clips (``check_length=False``) may last up to ``MAX_AUX_S``.
    """
    cap = MAX_REFERENCE_DECODE_S if check_length else MAX_AUX_S
    try:
        samples, rate = load_audio(path, max_seconds=cap)
    except AudioTooLongError as err:
        length = f"{err.seconds:.2f} s" if err.seconds is not None else f"over {cap:g} s"
        rule = "it must be 3-10 s long" if check_length else f"aux clips may last {cap:g} s"
        raise ReferenceAudioError(
            f"reference clip {path} lasts {length}; {rule}: cut or re-record it "
            "(wyoming-sovits voice add picks a clip from a long recording)"
        ) from err
    except AudioDecodeError as err:
        raise ReferenceAudioError(str(err)) from err
    wav16k = resample(samples, rate, SSL_RATE)
    if check_length and not MIN_REFERENCE_SAMPLES <= len(wav16k) <= MAX_REFERENCE_SAMPLES:
        raise ReferenceAudioError(
            f"reference clip {path} lasts {len(samples) / rate:.2f} s; it must be 3-10 s long: "
            "cut or re-record it (and update the transcript in voice.yaml)"
        )
    # Resampling can overshoot full scale; the spectrogram path tames that as upstream does.
    return ReferenceAudio(Path(path), wav16k, peak_guard(resample(samples, rate, OUTPUT_RATE)))


@dataclass(frozen=True)
class TextFeatures:
    """Phones of one text and the GPT's per-phone features: ``ids`` (L,), ``bert`` (D, L)."""

    phones: Phones
    ids: Tensor
    bert: Tensor
    bert_zeros: bool = False  # no Chinese segment: ``bert`` is all zeros


def text_features(text: str, language: str, bert: BertFeatures, bert_dim: int) -> TextFeatures:
    """Phone ids and BERT features of ``text`` in a language mode.

    Only Chinese segments get real BERT features (the GPT was trained that way); every
    other language, Cantonese included, gets zeros for its phones.
    """
    phones = to_phones(text, language)
    parts: list[Tensor] = []
    zeros = True
    for seg in phones.segments:
        if seg.language.removeprefix("all_") == "zh" and seg.word2ph is not None:
            parts.append(bert(seg.norm_text, seg.word2ph).float().cpu())  # (D, n_seg)
            zeros = False
        else:
            parts.append(torch.zeros(bert_dim, len(seg.ids)))
    ids = torch.tensor(phones.ids, dtype=torch.long)  # (L,)
    return TextFeatures(phones, ids, torch.cat(parts, dim=1), zeros)  # bert (D, L)


def prompt_text(transcript: str, language: str) -> str:
    """The transcript as the reference feeds it: a final stop is added when it has none,
    so the GPT sees a finished sentence before the request text."""
    text = transcript.strip("\n")
    if text and text[-1] not in SPLITS:
        text += "." if language == "en" else "。"
    return text


@torch.inference_mode()
def reference_tokens(hubert: HubertEncoder, sovits: SoVITS, wav16k: np.ndarray) -> Tensor:
    """Prompt tokens (T25,) int64 of a 16 kHz clip (HuBERT appends its 0.6 s of zeros)."""
    device = next(sovits.parameters()).device
    dtype = next(sovits.parameters()).dtype
    ssl = hubert(torch.from_numpy(wav16k)).to(device, dtype)  # (1, 768, T50)
    return sovits.extract_latent(ssl)[0, 0].long().cpu()  # (T25,)


@torch.inference_mode()
def reference_ge(
    sovits: SoVITS, sv: SpeakerEncoder | None, clips: Sequence[ReferenceAudio]
) -> Tensor:
    """``ge`` (1, gin, 1) float32 averaged over ``clips`` (main clip first)."""
    param = next(sovits.parameters())
    specs, embs = [], []
    for clip in clips:
        wav = torch.from_numpy(clip.wav32k).to(param.device, torch.float32)
        specs.append(linear_spectrogram(wav[None]).to(param.dtype))  # (1, 1025, frames)
        if sovits.cfg.is_pro:
            if sv is None:
                raise ReferenceAudioError(
                    f"SoVITS {sovits.cfg.version} needs the speaker-verification model; "
                    "load the pipeline with its sv file"
                )
            wav16k = torch.from_numpy(peak_guard(clip.wav16k)).to(param.device)
            embs.append(sv.embed(wav16k).to(param.dtype))  # (1, sv_dim)
    ge = sovits.encode_references(specs, embs if sovits.cfg.is_pro else None)
    return ge.float().cpu()


@dataclass(frozen=True)
class Prompt:
    """A prepared voice: ``phone_ids`` (Np,), ``bert`` (D, Np), ``tokens`` (T25,), ``ge`` (1, gin, 1).

    ``gpt``/``sovits`` name the weight files it was made for (a voice may bring its own);
    ``text_language`` is the voice's default language mode for request text.
    """

    voice: str
    text_language: str
    phone_ids: Tensor
    bert: Tensor
    tokens: Tensor
    ge: Tensor
    gpt: Path
    sovits: Path
    key: str


def file_identity(path: Path) -> str:
    """Path, size and mtime of a file, or of every file in a folder (cheap, no hashing)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    parts = []
    for file in files:
        stat = file.stat()
        parts.append(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    return "\n".join(parts)


def prompt_key(
    clips: Iterable[Path], transcript: str, language: str, model_files: Iterable[Path]
) -> str:
    """Hex digest over the clips' bytes, transcript, language and model identities."""
    digest = hashlib.sha256(f"wyoming-sovits prompt v{CACHE_FORMAT}\n".encode())
    for clip in clips:
        digest.update(hashlib.sha256(Path(clip).read_bytes()).digest())
    digest.update(f"\n{language}\n{transcript}\n".encode())
    for model in model_files:
        digest.update(file_identity(model).encode() + b"\n")
    return digest.hexdigest()


class PromptStore:
    """Prepared prompts by key: a dict in memory, ``<key>.npz`` files in ``folder`` (optional)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, dict[str, Tensor]] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"prompt-{key[:32]}.npz"

    def get(self, key: str, template: Prompt) -> Prompt | None:
        """The stored prompt for ``key``, or None; who uses it (voice, weight files,
        language) comes from ``template``, since two voices may share one clip."""
        with self._lock:
            arrays = self._memory.get(key)
        if arrays is None:
            arrays = self._read(key)
            if arrays is None:
                return None
            with self._lock:
                self._memory[key] = arrays
        return replace(
            template,
            phone_ids=arrays["phone_ids"],
            bert=arrays["bert"],
            tokens=arrays["tokens"],
            ge=arrays["ge"],
            key=key,
        )

    def _read(self, key: str) -> dict[str, Tensor] | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != key:
                    return None
                return {name: torch.from_numpy(data[name].copy()) for name in _ARRAYS}
        except (OSError, KeyError, ValueError) as err:
            _LOGGER.warning("Ignoring unreadable prompt cache %s: %s", path, err)
            return None

    def put(self, prompt: Prompt) -> None:
        """Remember ``prompt``; write it to disk atomically (a crash leaves no half file)."""
        with self._lock:
            self._memory[prompt.key] = {name: getattr(prompt, name) for name in _ARRAYS}
        path = self._path(prompt.key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(prompt, name).cpu().numpy() for name in _ARRAYS}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".prompt-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, key=np.array(prompt.key), **arrays)
            os.replace(tmp, path)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            _LOGGER.warning("Cannot write prompt cache %s: %s", path, err)
