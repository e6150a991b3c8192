"""Phone symbol tables of the official weights (v1: 322 symbols, v2 and later: 732).

The text-embedding rows of the released GPT and SoVITS models are indexed by these
tables, so the order is part of the weight format: v1 is the code-point-sorted set of
pad + Mandarin initials/finals + Japanese + punctuation + ARPAbet; v2 appends ``[``/``]``
(Japanese pitch marks), the sorted Korean jamo and the sorted ``Y``-prefixed jyutping
units, without re-sorting the whole, so v1 ids stay valid in v2.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

PAD = "_"
UNK = "UNK"
PUNCTUATION: tuple[str, ...] = ("!", "?", "…", ",", ".", "-")
"""Punctuation kept as phones by every language frontend."""

_SPECIAL = ("SP", "SP2", "SP3", UNK)

# Mandarin initials ("AA"/"EE"/"OO" stand in for zero initials) and finals (tones 1-5).
ZH_INITIALS: tuple[str, ...] = tuple(
    "AA EE OO b c ch d f g h j k l m n p q r s sh t w x y z zh".split()
)
ZH_FINALS: tuple[str, ...] = tuple(
    (
        "E En a ai an ang ao e ei en eng er i i0 ia ian iang iao ie in ing iong ir iu "
        "o ong ou u ua uai uan uang ui un uo v van ve vn"
    ).split()
)

_JA = "I N U a b by ch cl d dy e f g gy h hy i j k ky m my n ny o p py r ry s sh t ts u v w y z"

_ARPA = (
    "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH "
    "EH0 EH1 EH2 ER ER0 ER1 ER2 EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG "
    "OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 UH1 UH2 UW0 UW1 UW2 V W Y Z ZH"
)

_KO = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"

# Jyutping units: these appear without a tone (initials, and a few finals used as
# initials by the Cantonese splitter) ...
_YUE_TONELESS = "a aa ai ak au b c d e f g gw h j k kw l m n ng o oi ok on ou p s t uk w z"
# ... and these finals carry one of the six Cantonese tones.
_YUE_TONED = (
    "a aa aai aak aam aan aang aap aat aau ai ak am an ang ap at au e ei ek eng eoi eon eot "
    "g i ik im in ing ip it iu k m n o oe oek oeng oi ok on ong ot ou p t u ui uk un ung ut "
    "yu yun yut"
)

VERSIONS: tuple[str, ...] = ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4")


class UnknownSymbolVersionError(ValueError):
    """Raised for a model version that has no symbol table."""


def _v1() -> tuple[str, ...]:
    zh_finals = [f + str(tone) for tone in range(1, 6) for f in ZH_FINALS]
    base = {PAD, *ZH_INITIALS, *zh_finals, *_JA.split(), *PUNCTUATION, *_SPECIAL, *_ARPA.split()}
    return tuple(sorted(base))


def _yue() -> list[str]:
    toned = [f + str(tone) for f in _YUE_TONED.split() for tone in range(1, 7)]
    return sorted("Y" + unit for unit in (*_YUE_TONELESS.split(), *toned))


SYMBOLS_V1: tuple[str, ...] = _v1()
SYMBOLS_V2: tuple[str, ...] = (*SYMBOLS_V1, "[", "]", *sorted(_KO), *_yue())


def symbols(version: str) -> tuple[str, ...]:
    """The symbol table that ``version`` weights were trained with (v1, or v2 for all later)."""
    if version == "v1":
        return SYMBOLS_V1
    if version in VERSIONS:
        return SYMBOLS_V2
    raise UnknownSymbolVersionError(
        f"unknown model version {version!r}; expected one of {', '.join(VERSIONS)}"
    )


@cache
def symbol_to_id(version: str) -> dict[str, int]:
    """Symbol → embedding row for ``version``."""
    return {s: i for i, s in enumerate(symbols(version))}


def phones_to_ids(phones: Iterable[str], version: str) -> list[int]:
    """Embedding ids of ``phones``; a phone missing from the table counts as ``UNK``."""
    table = symbol_to_id(version)
    unk = table[UNK]
    return [table.get(p, unk) for p in phones]
