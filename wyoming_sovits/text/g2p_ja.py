"""Japanese: Open JTalk phonemes with prosody marks, as the v2 weights were trained.

Open JTalk (through pyopenjtalk-plus) reads each run of Japanese characters; the
full-context labels are turned into phonemes plus four marks: ``[`` pitch rise,
``]`` pitch fall, ``#`` accent-phrase border and ``_`` pause. ``#`` is not in the v2
symbol table, so every border becomes ``UNK`` downstream; the released weights learnt
that, so it is kept. Characters outside the Japanese runs (punctuation, ``.`` and
``,`` inside numbers, brackets) are passed through as their own phones.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

from wyoming_sovits.text.split import replace_consecutive_punctuation

__all__ = ["JapaneseDictionaryError", "clean", "g2p", "normalize"]

# Characters Open JTalk reads; everything else is a mark passed through on its own.
_JA_CHARS = (
    r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
)
_JA_START = re.compile(f"[{_JA_CHARS}]")
_NOT_JA = re.compile(f"[^{_JA_CHARS}]")
_MARK_TO_PHONE = {
    "：": ",",
    "；": ",",
    "，": ",",
    "。": ".",
    "！": "!",
    "？": "?",
    "\n": ".",
    "·": ",",
    "、": ",",
}
# Vowels, the moraic nasal and the geminate closure can end an accent phrase.
_PHRASE_FINAL = frozenset({"a", "i", "u", "e", "o", "A", "I", "U", "E", "O", "N", "cl"})

_P3 = re.compile(r"-(.*?)\+")
_A1 = re.compile(r"/A:([0-9\-]+)\+")
_A2 = re.compile(r"\+(\d+)\+")
_A3 = re.compile(r"\+(\d+)/")
_E3 = re.compile(r"!(\d+)_")
_F1 = re.compile(r"/F:(\d+)_")


# NAIST-jdic compiled for Open JTalk 1.11, as Debian's open-jtalk-mecab-naist-jdic installs it.
_SYSTEM_DICTIONARY = Path("/var/lib/mecab/dic/open-jtalk/naist-jdic")


class JapaneseDictionaryError(RuntimeError):
    """No Open JTalk dictionary is installed; pyopenjtalk would download one."""


def _dictionary_dir(bundled: str) -> Path:
    """Pick the Open JTalk dictionary: ``OPEN_JTALK_DICT_DIR``, the system NAIST-jdic, or
    the one bundled with the package (pyopenjtalk-plus ships one).

    The v2 weights were trained on pyopenjtalk 0.4.1 with NAIST-jdic 1.11; other
    dictionaries change accents and some readings.
    """
    for candidate in (os.environ.get("OPEN_JTALK_DICT_DIR"), _SYSTEM_DICTIONARY, bundled):
        if candidate and (Path(candidate) / "sys.dic").is_file():
            return Path(candidate)
    raise JapaneseDictionaryError(
        "no Open JTalk dictionary found; install Debian's open-jtalk-mecab-naist-jdic "
        f"({_SYSTEM_DICTIONARY}) or set OPEN_JTALK_DICT_DIR to a NAIST-jdic 1.11 directory"
    )


@cache
def _openjtalk() -> Any:
    """Import lazily (the dictionary load costs time other languages need not pay), and
    point pyopenjtalk at a local dictionary so that it never downloads one."""
    import pyopenjtalk

    bundled = pyopenjtalk.OPEN_JTALK_DICT_DIR
    bundled = bundled.decode("utf-8") if isinstance(bundled, bytes) else str(bundled)
    pyopenjtalk.OPEN_JTALK_DICT_DIR = str(_dictionary_dir(bundled)).encode("utf-8")
    return pyopenjtalk


def _feature(pattern: re.Pattern[str], label: str) -> int:
    """A numeric field of a full-context label; -50 where it is undefined (``xx``)."""
    match = pattern.search(label)
    return int(match.group(1)) if match else -50


def _label_phones(labels: list[str]) -> list[str]:
    """Phonemes with prosody marks from Open JTalk full-context labels.

    The first and last labels are silences; they become ``^`` and ``$`` (``?`` for a
    question), which the caller drops.
    """
    phones: list[str] = []
    for n, label in enumerate(labels):
        match = _P3.search(label)
        p3 = match.group(1) if match else ""
        if p3 in ("A", "E", "I", "O", "U"):
            p3 = p3.lower()  # devoiced vowels are read as plain vowels
        if p3 == "sil":
            if n == 0:
                phones.append("^")
            elif n == len(labels) - 1:
                phones.append("?" if _feature(_E3, label) == 1 else "$")
            continue
        if p3 == "pau":
            phones.append("_")
            continue
        phones.append(p3)
        if n + 1 < len(labels):
            mark = _prosody_mark(p3, label, labels[n + 1])
            if mark:
                phones.append(mark)
    return phones


def _prosody_mark(p3: str, label: str, next_label: str) -> str:
    """``#``, ``]`` or ``[`` after the current phoneme, or ``""``."""
    a1 = _feature(_A1, label)
    a2 = _feature(_A2, label)
    a3 = _feature(_A3, label)
    f1 = _feature(_F1, label)
    a2_next = _feature(_A2, next_label)
    if a3 == 1 and a2_next == 1 and p3 in _PHRASE_FINAL:
        return "#"
    if a1 == 0 and a2_next == a2 + 1 and a2 != f1:
        return "]"
    if a2 == 1 and a2_next == 2:
        return "["
    return ""


def _read_run(run: str) -> list[str]:
    """Phonemes of one run of Japanese characters, without the edge silences."""
    pyopenjtalk = _openjtalk()
    labels = pyopenjtalk.make_label(pyopenjtalk.run_frontend(run))
    return _label_phones(list(labels))[1:-1]


def normalize(text: str) -> str:
    """Collapse repeated punctuation, which would otherwise leak prosody from the prompt."""
    return replace_consecutive_punctuation(text)


def g2p(norm_text: str) -> tuple[list[str], None]:
    """Phonemes of normalized Japanese text; no word2ph for Japanese."""
    text = norm_text.replace("％", "パーセント").lower()
    runs = _NOT_JA.split(text)
    marks = _NOT_JA.findall(text)
    phones: list[str] = []
    for i, run in enumerate(runs):
        if _JA_START.match(run):
            phones += _read_run(run)
        if i < len(marks) and marks[i] != " ":
            phones.append(marks[i])
    return [_MARK_TO_PHONE.get(p, p) for p in phones], None


def clean(text: str) -> tuple[list[str], None, str]:
    """Normalize and convert; phones are not yet mapped to ``UNK``."""
    norm_text = normalize(text)
    phones, word2ph = g2p(norm_text)
    return phones, word2ph, norm_text
