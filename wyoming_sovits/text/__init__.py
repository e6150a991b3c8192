"""Text frontend: input clean-up, sentence splitting, language segmentation, g2p → ids.

``to_phones`` is what the pipeline calls once per sentence; it reproduces the
reference ``TextPreprocessor.get_phones_and_bert`` (minus BERT features), so that the
ids match what the released weights were trained on. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wyoming_sovits.text.cleaner import LANGUAGES, CleanedText, TextFrontendError, clean_text
from wyoming_sovits.text.langseg import MODES, LangSegment, segment
from wyoming_sovits.text.normalize import clean_input
from wyoming_sovits.text.split import (
    StreamingSentenceSplitter,
    pre_seg_text,
    replace_consecutive_punctuation,
    split_sentences,
)

__all__ = [
    "LANGUAGES",
    "MODES",
    "CleanedText",
    "LangSegment",
    "PhoneSegment",
    "Phones",
    "StreamingSentenceSplitter",
    "TextFrontendError",
    "clean_input",
    "clean_text",
    "pre_seg_text",
    "replace_consecutive_punctuation",
    "split_sentences",
    "to_phones",
]

_MIN_PHONES = 6  # below this the reference retries with a leading "."
# Phones that are pauses or punctuation: a result made only of these says nothing.
_SILENT = frozenset({"!", "?", "…", ",", ".", "-", "_", "SP", "SP2", "SP3", "UNK", "空", "停"})
_DOUBLE_SPACES = re.compile(" {2,}")


@dataclass(frozen=True)
class PhoneSegment:
    """One single-language run of the input after cleaning.

    ``word2ph`` (zh and yue only) counts phones per character of ``norm_text``; the
    Chinese BERT features are built per segment from exactly these two.
    """

    text: str
    language: str
    norm_text: str
    phones: tuple[str, ...]
    ids: tuple[int, ...]
    word2ph: tuple[int, ...] | None


@dataclass(frozen=True)
class Phones:
    """Phone ids of one sentence, plus what produced them.

    ``ids``/``phones`` are the segments' concatenated; ``norm_text`` their joined
    norm_texts. ``word2ph`` is the concatenation over segments when every segment has
    one (all zh/yue), else ``None``: use ``segments`` for per-segment alignment.
    ``retried`` is true when fewer than 6 phones came out and the text was cleaned
    again with a leading ``"."``, as the reference does.
    """

    ids: tuple[int, ...]
    phones: tuple[str, ...]
    word2ph: tuple[int, ...] | None
    norm_text: str
    segments: tuple[PhoneSegment, ...]
    retried: bool = False


def _clean_segments(text: str, language: str, normalize: bool, version: str) -> Phones:
    segments: list[PhoneSegment] = []
    for seg in segment(text, language):
        if not seg.text:
            continue
        cleaned = clean_text(seg.text, seg.language, version, normalize)
        segments.append(
            PhoneSegment(
                seg.text,
                seg.language,
                cleaned.norm_text,
                cleaned.phones,
                cleaned.ids,
                cleaned.word2ph,
            )
        )
    word2ph: tuple[int, ...] | None = None
    if segments and all(s.word2ph is not None for s in segments):
        word2ph = tuple(n for s in segments for n in s.word2ph or ())
    return Phones(
        ids=tuple(i for s in segments for i in s.ids),
        phones=tuple(p for s in segments for p in s.phones),
        word2ph=word2ph,
        norm_text="".join(s.norm_text for s in segments),
        segments=tuple(segments),
    )


def to_phones(text: str, language: str, *, normalize: bool = True, version: str = "v2") -> Phones:
    """Phone ids of one sentence in a language mode (``auto``, ``zh``, ``all_ja``, ...).

    Raises :class:`TextFrontendError` for an unknown mode or language, and when the
    text holds nothing speakable (empty, only punctuation, symbols or emoji).
    """
    if language not in MODES:
        raise TextFrontendError(f"unknown language {language!r}; valid: {', '.join(MODES)}")
    text = _DOUBLE_SPACES.sub(" ", text)
    if not any(ch.isalnum() for ch in text):
        raise TextFrontendError(f"nothing to say in {text[:80]!r}")
    result = _clean_segments(text, language, normalize, version)
    if len(result.ids) < _MIN_PHONES:
        # Very short inputs come out garbled; the reference pads them with a leading ".".
        retry = _clean_segments("." + text, language, normalize, version)
        result = Phones(
            retry.ids, retry.phones, retry.word2ph, retry.norm_text, retry.segments, True
        )
    if all(p in _SILENT for p in result.phones):
        raise TextFrontendError(f"no speakable phones in {text[:80]!r}")
    return result
