"""Input clean-up for text from Home Assistant and LLM agents (not language normalization).

Conversation agents answer in Markdown, with emoji and the odd control character;
none of that should be spoken or reach the phonemizers. Language-specific
normalization (numbers, dates, ...) happens later in each ``g2p_<lang>`` module.
"""

from __future__ import annotations

import html
import re
import unicodedata

__all__ = ["clean_input"]

_CODE_FENCE = re.compile(r"```[^\n]*\n?(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_BARE_URL = re.compile(r"<(https?://[^>]+)>")
_EMPHASIS = re.compile(r"(\*\*|__|\*|~~)(?=\S)(.+?)(?<=\S)\1")
_UNDERSCORE_EM = re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.MULTILINE)
_RULE = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$", re.MULTILINE)
_TABLE_BAR = re.compile(r"\s*\|\s*")
_SSML_BREAK = re.compile(r"<break\b[^>]*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_SPACE_BEFORE_MARK = re.compile(r" +([,.!?;:，。！？、；：])")
_REPEATED_COMMA = re.compile(r"([,，、])(?:\s*[,，、])+")
# Sentence-final marks in the scripts we speak; a line ending otherwise gets a full stop.
_FINAL = "。！？.!?…;；:：,，、"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def _is_dropped(ch: str) -> bool:
    """Emoji, pictographs, control and format characters carry nothing to say."""
    if ch in "\n\t ":
        return False
    category = unicodedata.category(ch)
    if category in ("Cc", "Cf", "Cs", "Co", "Cn", "So", "Sk"):
        return ch not in "°℃℉"  # degree signs are read by the language normalizers
    return category == "Mn" and 0xFE00 <= ord(ch) <= 0xFE0F  # emoji variation selectors


def _strip_markdown(text: str) -> str:
    """Keep the words of Markdown, drop its syntax."""
    text = _CODE_FENCE.sub(r"\1", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _BARE_URL.sub(r"\1", text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _UNDERSCORE_EM.sub(r"\1", text)
    return _TABLE_BAR.sub(" ", text) if "|" in text else text


def _tidy(line: str) -> str:
    """Collapse spaces, and the gaps and double commas that removed symbols leave behind."""
    line = _SPACES.sub(" ", line)
    line = _SPACE_BEFORE_MARK.sub(r"\1", line)
    return _REPEATED_COMMA.sub(r"\1", line).strip(" ,，、")


def _end_line(line: str) -> str:
    """Give a line that ends without punctuation a full stop, so lines stay sentences."""
    if not line or line[-1] in _FINAL:
        return line
    return line + ("。" if _CJK.match(line[-1]) else ".")


def clean_input(text: str, *, ssml: bool = False, punctuate: bool = True) -> str:
    """Turn agent output into plain speakable text.

    Strips Markdown (and SSML tags when ``ssml``), emoji and control characters, joins
    lines into one text, collapses whitespace and, with ``punctuate``, ends every line
    (and so the text) with punctuation, as Piper's auto-punctuation does.
    """
    if ssml:
        text = _SSML_BREAK.sub(", ", text)
        text = html.unescape(_TAG.sub(" ", text))
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _strip_markdown(text)
    text = "".join(ch for ch in text if not _is_dropped(ch))
    lines = [_tidy(line) for line in text.split("\n")]
    lines = [line for line in lines if line]
    if punctuate:
        lines = [_end_line(line) for line in lines]
    joined = ""
    for line in lines:
        space = "" if not joined or _CJK.match(joined[-1]) or _CJK.match(line[0]) else " "
        joined += space + line
    return joined
