"""Mandarin tone sandhi on dictionary tones: 不, 一, neutral tones and third-tone chains.

pypinyin gives each character its citation tone; speech changes some of them depending
on the neighbours (你好 → ni2 hao3, 一个 → yi2 ge5, 看不懂 → bu5). The rules and word
lists are those of the reference frontend (PaddleSpeech's ``ToneSandhi``), because the
released weights learned these tones. Finals are pypinyin ``FINALS_TONE3`` strings with
the tone digit last (5 = neutral).

Word segmentation comes from jieba; ``Segment`` is a ``[word, pos]`` pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from functools import cache, lru_cache
from importlib import resources

import jieba
from pypinyin import Style
from pypinyin.constants import PHRASES_DICT, PINYIN_DICT, RE_HANS
from pypinyin.converter import UltimateConverter
from pypinyin.core import Pinyin

Segment = list[str]  # [word, part-of-speech tag]

_PAUSE_MARKS = "：，；。？！“”‘’':,;.?!"


@cache
def _word_list(name: str) -> frozenset[str]:
    path = resources.files("wyoming_sovits").joinpath(f"data/text/zh/{name}")
    return frozenset(w for w in path.read_text(encoding="utf-8").split() if w)


def neutral_tone_words() -> frozenset[str]:
    """Words whose last syllable is always neutral (麻烦, 东西, 时候, …)."""
    return _word_list("neutral_tone_words.txt")


def not_neutral_tone_words() -> frozenset[str]:
    """Reduplications and -子 words that keep their full tone (人人, 电子, …)."""
    return _word_list("not_neutral_tone_words.txt")


def finals_tone3(word: str) -> list[str]:
    """pypinyin finals with tone digit, neutral tone as 5 (a new list: callers edit it)."""
    return list(word_pinyin(word)[1])


# What ``lazy_pinyin`` builds on every call: ``_INITIALS`` converts as
# ``lazy_pinyin(word, style=Style.INITIALS)`` does, ``_FINALS`` as
# ``lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)``.
_SEGMENTER = Pinyin(UltimateConverter())
_INITIALS = UltimateConverter()
_FINALS = UltimateConverter(neutral_tone_with_five=True)


@lru_cache(maxsize=8192)
def word_pinyin(word: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """pypinyin's initials and finals (tone digit, neutral 5) of a word, in one pass.

    The same steps as the two ``lazy_pinyin`` calls, which repeat the segmentation and
    the dictionary lookups: pypinyin's segmentation, then each Han segment's readings
    (its phrase entry, else each character's first reading, else the character itself),
    each converted to both styles; a segment without Han characters stands for itself.
    Cached: the reading depends on the word alone (pypinyin's dictionaries are fixed).
    """
    initials: list[str] = []
    finals: list[str] = []
    for segment in _SEGMENTER.seg(word):
        if not RE_HANS.match(segment):
            if segment:
                initials.append(segment)
                finals.append(segment)
            continue
        phrase = PHRASES_DICT.get(segment)
        if phrase is not None:
            readings = [item[0] for item in phrase]
        else:
            readings = [_first_reading(han) for han in segment]
        for reading in readings:
            initial, final = _syllable_styles(reading)
            initials.append(initial)
            finals.append(final)
    return tuple(initials), tuple(finals)


def _first_reading(han: str) -> str:
    readings = PINYIN_DICT.get(ord(han))
    return han if readings is None else readings.split(",")[0]


@lru_cache(maxsize=4096)
def _syllable_styles(reading: str) -> tuple[str, str]:
    """A tone-marked reading in the two styles (pypinyin's own converters; the character
    a reading belongs to is passed to them but read by neither style)."""
    initial = _INITIALS.convert_style("", reading, Style.INITIALS, True)
    final = _FINALS.convert_style("", reading, Style.FINALS_TONE3, True)
    return initial or "", final or ""


@lru_cache(maxsize=4096)
def split_word(word: str) -> tuple[str, str]:
    """Two parts of a word: its shortest search-mode sub-word, and the rest.

    The sub-word is assumed to sit at the start when found there, else at the end.
    """
    shortest = min(jieba.cut_for_search(word), key=len, default=word)
    if word.find(shortest) == 0:
        return shortest, word[len(shortest) :]
    return word[: -len(shortest)], shortest


def _set_tone(final: str, tone: str) -> str:
    return final[:-1] + tone


def _all_third(finals: Sequence[str]) -> bool:
    return all(f[-1] == "3" for f in finals)


# --------------------------------------------------------------------- per word


def _bu(word: str, finals: list[str]) -> list[str]:
    if len(word) == 3 and word[1] == "不":  # 看不懂: the middle 不 is neutral
        finals[1] = _set_tone(finals[1], "5")
        return finals
    for i, char in enumerate(word[:-1]):
        if char == "不" and finals[i + 1][-1] == "4":  # 不怕 → bu2
            finals[i] = _set_tone(finals[i], "2")
    return finals


def _yi(word: str, finals: list[str]) -> list[str]:
    if "一" in word and all(c.isnumeric() for c in word if c != "一"):
        return finals  # digits read out (一零零) keep yi1
    if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:
        finals[1] = _set_tone(finals[1], "5")  # 看一看
    elif word.startswith("第一"):
        finals[1] = _set_tone(finals[1], "1")
    else:
        for i, char in enumerate(word[:-1]):
            if char != "一":
                continue
            if finals[i + 1][-1] == "4":
                finals[i] = _set_tone(finals[i], "2")  # 一段
            elif word[i + 1] not in _PAUSE_MARKS:
                finals[i] = _set_tone(finals[i], "4")  # 一天
    return finals


def _neutral_suffix_index(word: str, pos: str) -> int | None:
    """Which syllable a grammatical particle or suffix makes neutral, if any."""
    ge = word.find("个")
    if word[-1] in "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶" or word[-1] in "的地得":
        return len(word) - 1
    if len(word) == 1 and word in "了着过" and pos in {"ul", "uz", "ug"}:
        return 0
    if (
        len(word) > 1
        and word[-1] in "们子"
        and pos in {"r", "n"}
        and word not in not_neutral_tone_words()
    ):
        return len(word) - 1
    if len(word) > 1 and word[-1] in "上下里" and pos in {"s", "l", "f"}:
        return len(word) - 1
    if len(word) > 1 and word[-1] in "来去" and word[-2] in "上下进出回过起开":
        return len(word) - 1
    if (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in "几有两半多各整每做是")) or (
        word == "个"
    ):
        return ge
    if word in neutral_tone_words() or word[-2:] in neutral_tone_words():
        return len(word) - 1
    return None


def _neutral(word: str, pos: str, finals: list[str]) -> list[str]:
    for j in range(1, len(word)):  # reduplicated nouns/verbs/adjectives: 奶奶, 试试
        if (
            word[j] == word[j - 1]
            and pos[:1] in {"n", "v", "a"}
            and word not in not_neutral_tone_words()
        ):
            finals[j] = _set_tone(finals[j], "5")
    index = _neutral_suffix_index(word, pos)
    if index is not None:
        finals[index] = _set_tone(finals[index], "5")
    parts = split_word(word)
    halves = [finals[: len(parts[0])], finals[len(parts[0]) :]]
    for part, half in zip(parts, halves, strict=True):
        if part in neutral_tone_words() or part[-2:] in neutral_tone_words():
            half[-1] = _set_tone(half[-1], "5")
    return halves[0] + halves[1]


def _third(word: str, finals: list[str]) -> list[str]:
    if len(word) == 2 and _all_third(finals):
        finals[0] = _set_tone(finals[0], "2")
    elif len(word) == 3:
        parts = split_word(word)
        if _all_third(finals):
            if len(parts[0]) == 2:  # 蒙古/包
                finals[0] = _set_tone(finals[0], "2")
                finals[1] = _set_tone(finals[1], "2")
            elif len(parts[0]) == 1:  # 纸/老虎
                finals[1] = _set_tone(finals[1], "2")
        else:
            head, tail = finals[: len(parts[0])], finals[len(parts[0]) :]
            for i, sub in enumerate((head, tail)):
                if _all_third(sub) and len(sub) == 2:  # 所有/人
                    sub[0] = _set_tone(sub[0], "2")
                elif i == 1 and not _all_third(sub) and sub[0][-1] == "3" and head[-1][-1] == "3":
                    head[-1] = _set_tone(head[-1], "2")  # 好/喜欢
            finals = head + tail
    elif len(word) == 4:  # idioms: two pairs
        for start in (0, 2):
            if _all_third(finals[start : start + 2]):
                finals[start] = _set_tone(finals[start], "2")
    return finals


def modified_tone(word: str, pos: str, finals: list[str]) -> list[str]:
    """Apply the sandhi rules to one segmented word's finals (returns a new list)."""
    finals = _bu(word, list(finals))
    finals = _yi(word, finals)
    finals = _neutral(word, pos, finals)
    return _third(word, finals)


# ------------------------------------------------- merging jieba words before sandhi


def _merge_bu(seg: list[Segment]) -> list[Segment]:
    """Attach a lone 不 to the next word, so 不 + tone 4 is seen inside one word."""
    merged: list[Segment] = []
    last = ""
    for word, pos in seg:
        if last == "不":
            word = last + word
        if word != "不":
            merged.append([word, pos])
        last = word
    if last == "不":
        merged.append([last, "d"])
    return merged


def _merge_yi(seg: list[Segment]) -> list[Segment]:
    """听 一 听 → 听一听; then a lone 一 joins the word after it."""
    merged: list[Segment] = []
    i = 0
    while i < len(seg):
        word, pos = seg[i]
        if i >= 1 and word == "一" and i + 1 < len(seg):
            last = merged[-1] if merged else seg[i - 1]
            following = seg[i + 1]
            if last[0] == following[0] and last[1] == "v" and following[1] == "v":
                merged[-1] = [last[0] + "一" + following[0], last[1]]
                i += 2
                continue
        merged.append([word, pos])
        i += 1
    result: list[Segment] = []
    for word, pos in merged:
        if result and result[-1][0] == "一":
            result[-1][0] += word
        else:
            result.append([word, pos])
    return result


def _merge_reduplication(seg: list[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for word, pos in seg:
        if merged and word == merged[-1][0]:
            merged[-1][0] += word
        else:
            merged.append([word, pos])
    return merged


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


def _merge_third_tones(seg: list[Segment], *, whole_words: bool) -> list[Segment]:
    """Join short neighbours whose meeting syllables are all third tone (≤ 3 chars).

    ``whole_words``: both words must be all third tone; else only the last syllable
    of the first and the first of the second. Raises ``IndexError`` on a word with no
    final (the caller then keeps the segmentation, as the reference does).
    """
    finals = [word_pinyin(word)[1] for word, _ in seg]
    merged: list[Segment] = []
    merged_last = False
    for i, (word, pos) in enumerate(seg):
        if i >= 1:
            if whole_words:
                third = _all_third(finals[i - 1]) and _all_third(finals[i])
            else:
                third = finals[i - 1][-1][-1] == "3" and finals[i][0][-1] == "3"
            previous = seg[i - 1][0]
            short = len(previous) + len(word) <= 3
            if third and not merged_last and not _is_reduplication(previous) and short:
                merged[-1][0] += word
                merged_last = True
                continue
        merged.append([word, pos])
        merged_last = False
    return merged


def _merge_er(seg: list[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for i, (word, pos) in enumerate(seg):
        if i >= 1 and word == "儿" and seg[i - 1][0] != "#":
            merged[-1][0] += word
        else:
            merged.append([word, pos])
    return merged


def pre_merge(seg: list[tuple[str, str]]) -> list[Segment]:
    """Regroup jieba's ``(word, pos)`` list so the sandhi rules see whole prosodic words."""
    merged = _merge_yi(_merge_bu([[w, p] for w, p in seg]))
    merged = _merge_reduplication(merged)
    for whole_words in (True, False):
        # A syllable without a final raises IndexError: keep the words as they are.
        with suppress(IndexError):
            merged = _merge_third_tones(merged, whole_words=whole_words)
    return _merge_er(merged)
