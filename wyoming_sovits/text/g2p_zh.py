"""Mandarin frontend: normalized text → pinyin initials/finals → v2 phone symbols.

Reproduces the reference's v2 path with g2pW off (the golden records were made that
way): jieba part-of-speech segmentation, pypinyin dictionary readings, tone sandhi,
erhua, then the opencpop-strict table that maps a pinyin syllable to the (initial,
final) symbol pair the weights know. Each character of the normalized text gets a
``word2ph`` entry (2 for a syllable, 1 for punctuation) so BERT features, which are
per character, can be spread over the phones.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from functools import cache, lru_cache
from importlib import resources

import jieba
import jieba.posseg

from .symbols import PUNCTUATION
from .zh_normalize import verbalize
from .zh_tone_sandhi import modified_tone, pre_merge, word_pinyin

_PUNCT = "".join(PUNCTUATION)
_PUNCT_CLASS = "[" + re.escape(_PUNCT) + "]"

# Reference punctuation map (chinese2.rep_map), applied after verbalization.
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
    "/": ",",
    "—": "-",
    "~": "…",
    "～": "…",
}
_PUNCT_RE = re.compile("|".join(re.escape(p) for p in _PUNCT_MAP))
_NOT_SPOKEN = re.compile("[^\u4e00-\u9fa5" + re.escape(_PUNCT) + "]+")
_REPEATED_PUNCT = re.compile(f"({_PUNCT_CLASS}){_PUNCT_CLASS}+")
_CLAUSE_END = re.compile(f"(?<={_PUNCT_CLASS})\\s*")
_LATIN = re.compile("[a-zA-Z]+")

# Input characters that turn ``,`` into a longer pause symbol (reference ``clean_special``).
SPECIAL_PAUSES = {"￥": "SP2", "^": "SP3"}

# Words where a final 儿 stays a syllable of its own, and words always merged.
_MUST_ERHUA = frozenset("小院儿 胡同儿 范儿 老汉儿 撒欢儿 寻老礼儿 妥妥儿 媳妇儿".split())
_NOT_ERHUA = frozenset(
    (
        "虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 "
        "婴儿 婴幼儿 连体儿 脑瘫儿 流浪儿 体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 "
        "孙儿 侄孙儿 女儿 男儿 红孩儿 花儿 虫儿 马儿 鸟儿 猪儿 猫儿 狗儿 少儿"
    ).split()
)
# Zero-initial syllables are spelled with y/w in the table (i → yi, u → wu, v → yu).
_ZERO_INITIAL = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}
_ZERO_INITIAL_HEAD = {"v": "yu", "e": "e", "i": "y", "u": "w"}
_CONTRACTED = {"uei": "ui", "iou": "iu", "uen": "un"}


@cache
def _pinyin_table() -> dict[str, tuple[str, str]]:
    """opencpop-strict: pinyin syllable (no tone) → (initial symbol, final symbol)."""
    path = resources.files("wyoming_sovits").joinpath("data/text/zh/opencpop-strict.txt")
    table: dict[str, tuple[str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            syllable, phones = line.split("\t")
            initial, final = phones.strip().split(" ")
            table[syllable] = (initial, final)
    return table


_State = tuple[str, str]  # (B/M/E/S position in the word, part-of-speech tag)
_MIN_FLOAT = -3.14e100  # jieba's log probability of an emission its tables lack


def _viterbi(run: str) -> tuple[float, list[_State]]:
    """``jieba.posseg.viterbi`` over jieba's own tables, with the same result, faster.

    jieba scores every (previous state, state) pair, the pairs without a transition at
    minus infinity; each such score loses to any finite one (every probability in the
    tables is finite), so only the pairs with a transition are scored here. Each score
    is the same sum in the same order, and the best is picked by the same key (score,
    then state), so ties go the same way. A run jieba itself fails on goes to jieba.
    """
    states_of = jieba.posseg.char_state_tab_P
    start, trans, emit = jieba.posseg.start_P, jieba.posseg.trans_P, jieba.posseg.emit_P
    all_states = trans.keys()
    first = run[0]
    scores = {
        y: start[y] + emit[y].get(first, _MIN_FLOAT) for y in states_of.get(first, all_states)
    }
    back: list[dict[_State, _State]] = [{}]  # back[i][state]: the best state before it
    for char in run[1:]:
        previous = [(x, scores[x], trans[x]) for x in scores if trans[x]]
        expected = {y for _, _, out in previous for y in out}
        # The character's states that can follow, else (as jieba) every state that can.
        states = set(states_of.get(char, all_states)) & expected or expected
        if not states:
            return jieba.posseg.viterbi(run, states_of, start, trans, emit)  # type: ignore[no-any-return]
        scores, came_from = {}, {}
        for y in states:
            emission = emit[y].get(char, _MIN_FLOAT)
            best: tuple[float, _State] | None = None
            for x, score, out in previous:
                step = out.get(y)
                if step is not None:
                    candidate = (score + step + emission, x)
                    if best is None or candidate > best:
                        best = candidate
            assert best is not None  # y is an expected state: some x leads to it
            scores[y], came_from[y] = best
        back.append(came_from)
    prob, state = max((score, y) for y, score in scores.items())
    route = [state] * len(run)
    for i in range(len(run) - 1, 0, -1):
        state = back[i][state]
        route[i - 1] = state
    return prob, route


class _POSTokenizer(jieba.posseg.POSTokenizer):
    """jieba's part-of-speech tokenizer with its HMM pass memoised and a faster Viterbi.

    jieba reads a run of characters its dictionary does not know (``的灯``, ``二十六度``)
    with a Viterbi search, most of the time of a ``cut``. Its result depends on the run
    alone, so :func:`_hmm_words` caches it, and :func:`_viterbi` finds the same route in
    less time; everything else is jieba's own code. The dictionaries are those of
    ``jieba.posseg.dt``, shared, not loaded a second time.
    """

    def __init__(self, base: jieba.posseg.POSTokenizer) -> None:
        self.tokenizer = base.tokenizer
        self.word_tag_tab = base.word_tag_tab

    # Overrides the name-mangled ``POSTokenizer.__cut_detail``, which ``__cut_DAG`` calls.
    def _POSTokenizer__cut_detail(self, sentence: str) -> Iterator[jieba.posseg.pair]:
        return (jieba.posseg.pair(word, tag) for word, tag in _hmm_words(sentence))

    # Overrides ``POSTokenizer.__cut`` (jieba's body, our Viterbi), which ``__cut_detail``
    # calls for each Han run.
    def _POSTokenizer__cut(self, sentence: str) -> Iterator[jieba.posseg.pair]:
        _, pos_list = _viterbi(sentence)
        begin, nexti = 0, 0
        for i, char in enumerate(sentence):
            pos = pos_list[i][0]
            if pos == "B":
                begin = i
            elif pos == "E":
                yield jieba.posseg.pair(sentence[begin : i + 1], pos_list[i][1])
                nexti = i + 1
            elif pos == "S":
                yield jieba.posseg.pair(char, pos_list[i][1])
                nexti = i + 1
        if nexti < len(sentence):
            yield jieba.posseg.pair(sentence[nexti:], pos_list[nexti][1])


@lru_cache(maxsize=4096)
def _hmm_words(run: str) -> tuple[tuple[str, str], ...]:
    """jieba's (word, tag) reading of a run of characters not in its dictionary."""
    detail = jieba.posseg.POSTokenizer._POSTokenizer__cut_detail
    return tuple((p.word, p.flag) for p in detail(_segmenter(), run))


@cache
def _segmenter() -> _POSTokenizer:
    """jieba's part-of-speech tokenizer; its dictionary loads on first use (~1 s)."""
    jieba.setLogLevel(logging.WARNING)
    return _POSTokenizer(jieba.posseg.dt)


def normalize(text: str) -> str:
    """Chinese text normalization: verbalized numbers, ASCII punctuation, Han characters only.

    A special pause mark (``￥``/``^``) reads as ``,`` here; :func:`clean` turns it into
    the pause symbol.
    """
    mark = _special_mark(text)
    if mark is not None:
        text = text.replace(mark, ",")
    spoken = "".join(_map_punctuation(sentence) for sentence in verbalize(text))
    return _REPEATED_PUNCT.sub(r"\1", spoken)


def _map_punctuation(sentence: str) -> str:
    sentence = sentence.replace("嗯", "恩").replace("呣", "母")
    sentence = _PUNCT_RE.sub(lambda m: _PUNCT_MAP[m[0]], sentence)
    return _NOT_SPOKEN.sub("", sentence)


def _erhua(initials: list[str], finals: list[str], word: str, pos: str) -> list[str]:
    """A final 儿 takes the tone of the syllable before it (儿化), except in listed words."""
    last = len(finals) - 1
    if 0 <= last < len(word) and word[last] == "儿" and finals[last] == "er1":
        finals[last] = "er2"
    skip = word in _NOT_ERHUA or pos in {"a", "j", "nr"}
    if (skip and word not in _MUST_ERHUA) or len(finals) != len(word) or len(word) < 2:
        return finals
    if word[-1] == "儿" and finals[-1] in {"er2", "er5"} and word[-2:] not in _NOT_ERHUA:
        finals[-1] = "er" + finals[-2][-1]
    return finals


def _word_pinyin(word: str, pos: str) -> tuple[list[str], list[str]]:
    """Initials and tone-sandhied finals of one segmented word."""
    word_initials, word_finals = word_pinyin(word)
    initials, finals = list(word_initials), list(word_finals)
    if len(finals) == len(word) and all(finals):
        finals = modified_tone(word, pos, finals)
    return initials, _erhua(initials, finals, word, pos)


def _syllable_phones(initial: str, final: str) -> list[str]:
    """One pinyin syllable → [initial symbol, final symbol + tone]; [] if it has no reading."""
    tone, bare = final[-1:], final[:-1]
    if not bare or tone not in "12345":
        return []
    if initial:
        pinyin = initial + _CONTRACTED.get(bare, bare)
    elif bare in _ZERO_INITIAL:
        pinyin = _ZERO_INITIAL[bare]
    elif bare[0] in _ZERO_INITIAL_HEAD:
        pinyin = _ZERO_INITIAL_HEAD[bare[0]] + bare[1:]
    else:
        pinyin = bare
    pair = _pinyin_table().get(pinyin)
    return [pair[0], pair[1] + tone] if pair else []


@lru_cache(maxsize=8192)
def _word_phones(word: str, pos: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Phones and per-character phone counts of one segmented, sandhi-merged word.

    Cached: the result depends on the word and its tag alone (pypinyin's and jieba's
    dictionaries are fixed), and a household's vocabulary is small.
    """
    phones: list[str] = []
    word2ph: list[int] = []
    for initial, final in zip(*_word_pinyin(word, pos), strict=True):
        if initial == final and initial and all(c in _PUNCT for c in initial):
            phones += initial  # a punctuation run: one phone per mark
            word2ph += [1] * len(initial)
            continue
        syllable = _syllable_phones(initial, final)
        phones += syllable
        word2ph.append(len(syllable))
    return tuple(phones), tuple(word2ph)


def _clause_phones(clause: str) -> tuple[list[str], list[int]]:
    phones: list[str] = []
    word2ph: list[int] = []
    words = pre_merge([(w, p) for w, p in _segmenter().lcut(_LATIN.sub("", clause))])
    for word, pos in words:
        if pos != "eng":
            word_phones, word_counts = _word_phones(word, pos)
            phones += word_phones
            word2ph += word_counts
    return phones, word2ph


def g2p(norm_text: str) -> tuple[list[str], list[int] | None]:
    """Phones and per-character phone counts of :func:`normalize` output."""
    phones: list[str] = []
    word2ph: list[int] = []
    for clause in _CLAUSE_END.split(norm_text):
        if clause.strip():
            clause_phones, clause_counts = _clause_phones(clause)
            phones += clause_phones
            word2ph += clause_counts
    return phones, word2ph


def _special_mark(text: str) -> str | None:
    return next((mark for mark in SPECIAL_PAUSES if mark in text), None)


def special_pause(text: str) -> str | None:
    """The pause symbol that replaces every ``,`` phone when ``text`` holds ``￥`` or ``^``."""
    mark = _special_mark(text)
    return None if mark is None else SPECIAL_PAUSES[mark]


def clean(text: str) -> tuple[list[str], list[int] | None, str]:
    """normalize + g2p; with a ``￥`` or ``^`` in the input, commas become SP2/SP3 pauses."""
    pause = special_pause(text)
    norm_text = normalize(text)
    phones, word2ph = g2p(norm_text)
    if pause is not None:
        phones = [pause if p == "," else p for p in phones]
    return phones, word2ph, norm_text
