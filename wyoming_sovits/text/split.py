"""Sentence splitting: a streaming splitter for LLM output, and the reference's cut methods.

Two different jobs live here:

* :class:`StreamingSentenceSplitter` / :func:`split_sentences` decide where a sentence
  ends so the server can start synthesising the first sentence while Home Assistant is
  still streaming the rest of the text word by word.
* ``cut0`` … ``cut5`` and :func:`pre_seg_text` reproduce the reference pipeline's
  sentence list (REFERENCE-NOTES §4.2) exactly, because the released weights were
  tuned on sentences shaped that way (leading ``"。"`` guard, merged short pieces,
  closing punctuation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import pairwise

from wyoming_sovits.text.cleaner import TextFrontendError

__all__ = [
    "CUT_METHODS",
    "SPLITS",
    "StreamingSentenceSplitter",
    "cut0",
    "cut1",
    "cut2",
    "cut3",
    "cut4",
    "cut5",
    "get_cut_method",
    "merge_short_texts",
    "pre_seg_text",
    "replace_consecutive_punctuation",
    "split_big_text",
    "split_sentences",
]

# ---------------------------------------------------------------------------
# Streaming splitter
# ---------------------------------------------------------------------------

# CJK sentence ends need no following space: CJK text has none.
_CJK_ENDS = frozenset("。！？；")
# Latin sentence ends count only when followed by whitespace (or a CJK char), which keeps
# "21.5", "example.com" and "e.g" inside one sentence.
_LATIN_ENDS = frozenset(".!?…;")
_CLOSERS = frozenset("\"'”’)]}」』）】》")
_RUN_CHARS = _CJK_ENDS | _LATIN_ENDS | _CLOSERS
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "etc.al",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "approx",
        "dept",
        "est",
        "fig",
        "gen",
        "gov",
        "inc",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "no",
        "nr",
        "vol",
        "ca",
        "cf",
    ]
)
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def _is_cjk(ch: str) -> bool:
    """Han, kana, hangul and CJK punctuation: scripts written without spaces."""
    code = ord(ch)
    return 0x3000 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xFF00 <= code <= 0xFFEF


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the ``.`` at ``dot`` closes a known abbreviation or a single initial."""
    match = _WORD_BEFORE.search(text, 0, dot)
    if match is None:
        return False
    word = match.group(1)
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # initials: "J. Smith"
    return word.lower().strip(".") in _ABBREVIATIONS


class StreamingSentenceSplitter:
    """Collects text fragments and releases each sentence as soon as its end is certain.

    An end is certain only once the character after it has arrived: ``"21."`` may still
    become ``"21.5"``, and ``"Wait..."`` may continue in lower case. Call :meth:`finish`
    at the end of the stream to release whatever is left (a last sentence without
    punctuation included).
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._scan_from = 0  # nothing before this index can be a boundary

    def add(self, fragment: str) -> list[str]:
        """Append ``fragment``; return the sentences it completed (possibly none)."""
        self._buffer += fragment
        return self._drain(final=False)

    def finish(self) -> list[str]:
        """Release the rest of the buffer as sentences and reset the splitter."""
        sentences = self._drain(final=True)
        rest = self._buffer.strip()
        self._buffer = ""
        self._scan_from = 0
        if _has_word(rest):
            sentences.append(rest)
        return sentences

    def _drain(self, final: bool) -> list[str]:
        sentences: list[str] = []
        while True:
            end, resume = _find_boundary(self._buffer, self._scan_from, final)
            if end is None:
                self._scan_from = resume
                return sentences
            sentence = self._buffer[:end].strip()
            self._buffer = self._buffer[end:]
            self._scan_from = 0
            if _has_word(sentence):
                sentences.append(sentence)


def _has_word(text: str) -> bool:
    """Pieces made only of punctuation or symbols carry nothing to speak."""
    return any(ch.isalnum() for ch in text)


def _find_boundary(text: str, start: int, final: bool) -> tuple[int | None, int]:
    """Find the first sentence end at or after ``start``.

    Returns ``(end, _)`` with ``end`` the exclusive end of the sentence, or
    ``(None, resume)`` when no end is certain yet; ``resume`` is where the next scan
    must start (an undecided candidate is scanned again when more text arrives).
    """
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "\n\r":
            return i + 1, 0
        if ch not in _CJK_ENDS and ch not in _LATIN_ENDS:
            i += 1
            continue
        j = i
        while j < n and text[j] in _RUN_CHARS:
            j += 1
        if j == n and not final:
            return None, i  # a closer, digit or more dots may still follow
        verdict = _judge(text, i, j, final)
        if verdict is None:
            return None, i
        if verdict:
            return j, 0
        i = j
    return None, n


def _judge(text: str, i: int, j: int, final: bool) -> bool | None:
    """Is the punctuation run ``text[i:j]`` a sentence end? ``None``: need more text."""
    run = text[i:j]
    if j == len(text) or any(ch in _CJK_ENDS for ch in run):
        return True
    nxt = text[j]
    if _is_cjk(nxt):
        return True
    if not nxt.isspace():
        return False  # "21.5", "e.g", "7.30", "example.com"
    if run == "." and _is_abbreviation(text, i):
        return False
    if "…" in run or ".." in run:
        return _ellipsis_ends(text, j, final)
    return True


def _ellipsis_ends(text: str, j: int, final: bool) -> bool | None:
    """An ellipsis ends a sentence unless the text goes on in lower case."""
    k = j
    while k < len(text) and text[k].isspace() and text[k] not in "\n\r":
        k += 1
    if k == len(text):
        return True if final else None
    return not text[k].islower()


def split_sentences(text: str) -> list[str]:
    """Split a complete text into sentences with the streaming splitter's rules."""
    splitter = StreamingSentenceSplitter()
    return splitter.add(text) + splitter.finish()


# ---------------------------------------------------------------------------
# The reference's cut methods (TTS_infer_pack/text_segmentation_method.py)
# ---------------------------------------------------------------------------

SPLITS = frozenset("，。？！,.?!~:：—…")
# Pieces made only of these are dropped by every cut method; cut0 counts the space too.
_PUNCTUATION = frozenset("!?…,.-")
_CUT_PUNCTUATION = _PUNCTUATION | {" "}
_CUT5_MARKS = frozenset(",.;?!、，。？！：…")


def _only_punctuation(piece: str) -> bool:
    return set(piece) <= _CUT_PUNCTUATION


def _join_kept(pieces: Iterable[str]) -> str:
    return "\n".join(p for p in pieces if not _only_punctuation(p))


def _clauses(text: str) -> list[str]:
    """Cut after every split mark, after folding double ellipses and dashes to one mark."""
    text = text.replace("……", "。").replace("——", "，")
    if not text:
        return []
    if text[-1] not in SPLITS:
        text += "。"  # the last clause must end in a mark too
    clauses: list[str] = []
    tail = 0
    for pos, ch in enumerate(text):
        if ch in SPLITS:
            clauses.append(text[tail : pos + 1])
            tail = pos + 1
    return clauses


def cut0(text: str) -> str:
    """No split; a text of only punctuation and spaces becomes a blank line."""
    return "\n" if _only_punctuation(text) else text


def cut1(text: str) -> str:
    """Four clauses per line; a short remainder joins the previous line."""
    text = text.strip("\n")
    clauses = _clauses(text)
    starts = list(range(0, len(clauses), 4))[:-1]
    if not starts:
        lines = [text]
    else:
        bounds = [*starts, len(clauses)]
        lines = ["".join(clauses[a:b]) for a, b in pairwise(bounds)]
    return _join_kept(lines)


def cut2(text: str) -> str:
    """Lines of just over 50 characters; a tail under 50 joins the previous line."""
    text = text.strip("\n")
    clauses = _clauses(text)
    if len(clauses) < 2:
        return text
    lines: list[str] = []
    current = ""
    for clause in clauses:
        current += clause
        if len(current) > 50:
            lines.append(current)
            current = ""
    if current:
        lines.append(current)
    if len(lines) > 1 and len(lines[-1]) < 50:
        lines[-2:] = [lines[-2] + lines[-1]]
    return _join_kept(lines)


def cut3(text: str) -> str:
    """Split on the ideographic full stop, which is dropped."""
    return _join_kept(text.strip("\n").strip("。").split("。"))


def cut4(text: str) -> str:
    """Split on ``.`` unless it sits between digits; the dots are dropped."""
    return _join_kept(re.split(r"(?<!\d)\.(?!\d)", text.strip("\n").strip(".")))


def cut5(text: str) -> str:
    """Split after every punctuation mark, keeping decimal points inside numbers."""
    text = text.strip("\n")
    pieces: list[str] = []
    current: list[str] = []
    last = len(text) - 1
    for pos, ch in enumerate(text):
        current.append(ch)
        if ch not in _CUT5_MARKS:
            continue
        decimal = (
            ch == "." and 0 < pos < last and text[pos - 1].isdigit() and text[pos + 1].isdigit()
        )
        if not decimal:
            pieces.append("".join(current))
            current = []
    if current:
        pieces.append("".join(current))
    return "\n".join(p for p in pieces if not set(p) <= _CUT5_MARKS)


CUT_METHODS: dict[str, Callable[[str], str]] = {
    "cut0": cut0,
    "cut1": cut1,
    "cut2": cut2,
    "cut3": cut3,
    "cut4": cut4,
    "cut5": cut5,
}


def get_cut_method(name: str) -> Callable[[str], str]:
    """Look up a cut method by name; the error lists the valid names."""
    try:
        return CUT_METHODS[name]
    except KeyError:
        valid = ", ".join(CUT_METHODS)
        raise ValueError(f"unknown text split method {name!r}; valid: {valid}") from None


# ---------------------------------------------------------------------------
# TextPreprocessor.pre_seg_text
# ---------------------------------------------------------------------------

_CONSECUTIVE = re.compile(
    "(["
    + re.escape("".join(sorted(_PUNCTUATION)))
    + "])["
    + re.escape("".join(sorted(_PUNCTUATION)))
    + "]+"
)
_SPLIT_CLASS = re.compile("[" + re.escape("".join(sorted(SPLITS))) + "]")
_NON_WORD = re.compile(r"\W+")


def replace_consecutive_punctuation(text: str) -> str:
    """Collapse runs of ``! ? … , . -`` to their first mark, as the reference does first."""
    return _CONSECUTIVE.sub(r"\1", text)


def merge_short_texts(texts: list[str], threshold: int) -> list[str]:
    """Join consecutive pieces until each is at least ``threshold`` characters long."""
    if len(texts) < 2:
        return texts
    merged: list[str] = []
    current = ""
    for piece in texts:
        current += piece
        if len(current) >= threshold:
            merged.append(current)
            current = ""
    if current:
        if merged:
            merged[-1] += current
        else:
            merged.append(current)
    return merged


def split_big_text(text: str, max_len: int = 510) -> list[str]:
    """Cut a piece longer than the BERT window at punctuation into parts of <= ``max_len``."""
    parts: list[str] = []
    current = ""
    for piece in re.split("(" + _SPLIT_CLASS.pattern + ")", text):
        if len(current + piece) > max_len:
            parts.append(current)
            current = piece
        else:
            current += piece
    if current:
        parts.append(current)
    return parts


def pre_seg_text(text: str, lang: str, method: str) -> list[str]:
    """The reference's sentence list for ``text`` (already passed through
    :func:`replace_consecutive_punctuation`), as fed to the phoneme stage.

    Raises :class:`TextFrontendError` where the reference refuses the input (nothing
    but punctuation and blanks after cutting); an empty input gives an empty list.
    """
    text = text.strip("\n")
    if not text:
        return []
    end_mark = "." if lang == "en" else "。"
    first_clause = _SPLIT_CLASS.split(text, maxsplit=1)[0].strip()
    if text[0] not in SPLITS and len(first_clause) < 4:
        text = end_mark + text  # keeps a very short first word from being swallowed
    cut = get_cut_method(method)(text)
    pieces = [p for p in cut.split("\n") if p not in ("", " ")]
    if not pieces:
        raise TextFrontendError(f"no text to speak in {text!r}")
    sentences: list[str] = []
    for piece in merge_short_texts(pieces, 5):
        if not piece.strip() or not _NON_WORD.sub("", piece):
            continue
        if piece[-1] not in SPLITS:
            piece += end_mark
        sentences.extend(split_big_text(piece) if len(piece) > 510 else [piece])
    return sentences
