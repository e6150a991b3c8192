"""Cantonese frontend: normalized text → jyutping → ``Y``-prefixed v2 phone symbols.

Text goes through the Mandarin verbalizer first (so it also becomes simplified
characters), then ToJyutping reads each character. A syllable splits into an initial
(no tone) and a final carrying the tone digit, both prefixed with ``Y`` so they cannot
clash with Mandarin symbols: ``hou2`` → ``Yh``, ``You2``. The split follows the
reference's prefix list, first match wins, which is why ``aai3`` becomes ``Yaa`` +
``Yi3``; the released weights learned exactly these units.
"""

from __future__ import annotations

import re

import ToJyutping

from .symbols import PUNCTUATION
from .zh_normalize import verbalize

_PUNCT = "".join(PUNCTUATION)

# Reference punctuation map (cantonese.rep_map): brackets and quotes become ' which
# the filter below then drops.
_PUNCT_MAP = {
    "：": ",",
    "；": ",",
    "，": ",",
    "。": ".",
    "！": "!",
    "？": "?",
    "\n": ".",
    "·": ",",
    "、": ",",
    "...": "…",
    "$": ".",
    "“": "'",
    "”": "'",
    '"': "'",
    "‘": "'",
    "’": "'",
    "（": "'",
    "）": "'",
    "(": "'",
    ")": "'",
    "《": "'",
    "》": "'",
    "【": "'",
    "】": "'",
    "[": "'",
    "]": "'",
    "—": "-",
    "～": "-",
    "~": "-",
    "「": "'",
    "」": "'",
}
_PUNCT_RE = re.compile("|".join(re.escape(p) for p in _PUNCT_MAP))
_NOT_SPOKEN = re.compile("[^\u4e00-\u9fa5" + re.escape(_PUNCT) + "]+")
_SYLLABLE = re.compile(r"[a-z]+[1-6]")

# Syllable onsets in the order the reference tries them (first prefix match wins).
_ONSETS = (
    "aa aai aak aap aat aau ai au ap at ak a p b e ts t dz d kw k gw g f h l m ng n s y w c z j "
    "ong on ou oi ok o uk ung sp spl spn sil"
).split()


def normalize(text: str) -> str:
    """Verbalize numbers (Mandarin rules), simplify characters, keep Han and punctuation."""
    return "".join(_map_punctuation(sentence) for sentence in verbalize(text))


def _map_punctuation(sentence: str) -> str:
    sentence = _PUNCT_RE.sub(lambda m: _PUNCT_MAP[m[0]], sentence)
    return _NOT_SPOKEN.sub("", sentence)


def syllable_phones(syllable: str) -> list[str]:
    """``gwong2`` → ``["Ygw", "Yong2"]``; ``m4`` → ``["Ym", "Ym4"]``; [] if no onset fits."""
    tone = syllable[-1] if syllable[-1:].isdigit() else ""
    body = syllable[: -len(tone)] if tone else syllable
    tone = "" if tone == "0" else tone
    for onset in _ONSETS:
        if body.startswith(onset):
            if body.startswith("nga"):
                onset = body[:2]
            final = body[len(onset) :] or onset[-1]
            return ["Y" + onset, "Y" + final + tone]
    return []


def g2p(norm_text: str) -> tuple[list[str], list[int] | None]:
    """Phones and per-character phone counts (2 per syllable, 1 per punctuation mark).

    A character ToJyutping cannot read gets no phones (count 0); the reference raises.
    """
    phones: list[str] = []
    word2ph: list[int] = []
    for chars, jyutping in ToJyutping.get_jyutping_list(norm_text):
        if chars and all(c in _PUNCT for c in chars):
            phones += chars
            word2ph += [1] * len(chars)
            continue
        syllables = _SYLLABLE.findall(jyutping or "")
        if len(syllables) != len(chars):
            word2ph += [0] * len(chars)
            continue
        for syllable in syllables:
            units = syllable_phones(syllable)
            phones += units
            word2ph.append(len(units))
    return phones, word2ph


def clean(text: str) -> tuple[list[str], list[int] | None, str]:
    """normalize + g2p."""
    norm_text = normalize(text)
    phones, word2ph = g2p(norm_text)
    return phones, word2ph, norm_text
