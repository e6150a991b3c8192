"""One language's text → phone symbols → embedding ids (the reference ``clean_text``).

Every ``g2p_<lang>`` module offers ``normalize``, ``g2p`` and ``clean``; this module
picks one by language code, maps phones missing from the version's symbol table to
``UNK`` (the weights were trained on exactly that), and adds the ids. Language
modules are imported on first use: each pulls in large dictionaries that a
single-language household never needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType

__all__ = ["LANGUAGES", "CleanedText", "TextFrontendError", "clean_text", "language_module"]

# Language code → module; v1 weights were trained on zh, ja and en only.
LANGUAGES: dict[str, str] = {
    "zh": "g2p_zh",
    "ja": "g2p_ja",
    "en": "g2p_en",
    "ko": "g2p_ko",
    "yue": "g2p_yue",
}
_V1_LANGUAGES = frozenset({"zh", "ja", "en"})


class TextFrontendError(ValueError):
    """The text cannot be turned into phones (unknown language, nothing to say, ...)."""


@dataclass(frozen=True)
class CleanedText:
    """One language run after cleaning.

    ``phones`` are symbols of the version's table (unknown ones already ``UNK``);
    ``word2ph`` counts phones per character of ``norm_text`` (zh and yue only).
    """

    phones: tuple[str, ...]
    ids: tuple[int, ...]
    word2ph: tuple[int, ...] | None
    norm_text: str


@cache
def language_module(language: str, version: str = "v2") -> ModuleType:
    """The ``g2p_<lang>`` module for ``language``; the error lists the valid codes."""
    valid = LANGUAGES if version != "v1" else {k: LANGUAGES[k] for k in _V1_LANGUAGES}
    if language not in valid:
        codes = ", ".join(valid)
        raise TextFrontendError(
            f"unknown language {language!r} for {version} weights; valid: {codes}"
        )
    return importlib.import_module(f"wyoming_sovits.text.{valid[language]}")


def clean_text(
    text: str, language: str, version: str = "v2", normalize: bool = True
) -> CleanedText:
    """Clean one single-language run of ``text``.

    With ``normalize=False`` the text goes straight to ``g2p`` (for text that is
    already normalized, such as a stored ``norm_text``); the language's extras that
    live in ``clean`` (the English ``","`` padding, the zh ``￥`` pause) are then
    skipped as well.
    """
    from wyoming_sovits.text.symbols import UNK, phones_to_ids, symbol_to_id

    module = language_module(language, version)
    if normalize:
        phones, word2ph, norm_text = module.clean(text)
    else:
        phones, word2ph = module.g2p(text)
        norm_text = text
    table = symbol_to_id(version)
    known = tuple(p if p in table else UNK for p in phones)
    return CleanedText(
        phones=known,
        ids=tuple(phones_to_ids(known, version)),
        word2ph=tuple(word2ph) if word2ph is not None else None,
        norm_text=norm_text,
    )
