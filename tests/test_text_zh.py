"""Mandarin frontend against the golden corpus (phones exact; normalization exact or listed).

Layer 1: ``g2p(norm_text)`` of every golden zh record and zh segment gives the golden
phones, word2ph and ids. Layer 2: ``normalize(text)`` gives the golden norm_text, except
the deviations listed in ``tests/data/text_deviations/zh.yaml`` (which must still differ).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from wyoming_sovits.text import g2p_zh
from wyoming_sovits.text.symbols import UNK, phones_to_ids, symbol_to_id
from wyoming_sovits.text.zh_tone_sandhi import finals_tone3, pre_merge, word_pinyin

DATA = Path(__file__).parent / "data"
TEXT_DIR = DATA / "contract" / "text"


def golden(lang: str) -> list[dict[str, Any]]:
    """Clean records of ``lang`` plus the segments of that language in segment_mixed."""
    lines = (TEXT_DIR / f"clean_{lang}.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    seen = {r["text"] for r in records}
    for line in (TEXT_DIR / "segment_mixed.jsonl").read_text(encoding="utf-8").splitlines():
        mixed = json.loads(line)
        segments = list(mixed["segments"])
        for sentence in mixed["preprocess"]["sentences"]:
            segments += sentence["segments"]
        for segment in segments:
            if segment["language"] == lang and segment["text"] not in seen:
                seen.add(segment["text"])
                records.append(segment)
    return records


def deviations(lang: str) -> dict[str, dict[str, str]]:
    entries = yaml.safe_load((DATA / "text_deviations" / f"{lang}.yaml").read_text("utf-8"))
    return {entry["input"]: entry for entry in entries}


RECORDS = golden("zh")
DEVIATIONS = deviations("zh")


def _ids(record: dict[str, Any]) -> str:
    return record["text"][:24]


@pytest.mark.parametrize("record", RECORDS, ids=_ids)
def test_phonemes(record: dict[str, Any]) -> None:
    phones, word2ph = g2p_zh.g2p(record["norm_text"])
    pause = g2p_zh.special_pause(record["text"])
    if pause is not None:
        phones = [pause if p == "," else p for p in phones]
    table = symbol_to_id("v2")
    phones = [p if p in table else UNK for p in phones]
    assert phones == record["phones"]
    assert word2ph == record["word2ph"]
    assert phones_to_ids(phones, "v2") == record["ids"]


@pytest.mark.parametrize("record", RECORDS, ids=_ids)
def test_normalization(record: dict[str, Any]) -> None:
    ours = g2p_zh.normalize(record["text"])
    deviation = DEVIATIONS.get(record["text"])
    if deviation is None:
        assert ours == record["norm_text"]
    else:
        assert deviation["reference"] == record["norm_text"]
        assert ours == deviation["ours"] != record["norm_text"]


def test_every_deviation_is_a_golden_input() -> None:
    assert set(DEVIATIONS) <= {r["text"] for r in RECORDS}


def test_clean_matches_golden_with_special_pause() -> None:
    record = next(r for r in RECORDS if "￥" in r["text"])
    phones, word2ph, norm_text = g2p_zh.clean(record["text"])
    assert (phones, word2ph, norm_text) == (
        record["phones"],
        record["word2ph"],
        record["norm_text"],
    )
    assert "SP2" in phones and "," not in phones


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("下午3点15分提醒吃药", "下午三点十五分提醒吃药"),
        ("温度21.5°C", "温度二十一点五度"),
        ("室外-3℃", "室外零下三度"),
        ("电量15%", "电量百分之十五"),
        ("湿度45.5%", "湿度百分之四十五点五"),
        ("￥25.5", ",二十五点五"),  # ￥ is the reference's pause mark, not money
        ("¥199", "一百九十九元"),
        ("请拨打13812345678", "请拨打幺三八幺二三四五六七八"),
        ("客服400-123-4567", "客服四零零,幺二三,四五六七"),
        ("物业电话010-62345678", "物业电话零幺零,六二三四五六七八"),
        ("8:30-9:15开会", "八点半至九点十五分开会"),
        ("6:05起床", "六点零五分起床"),
        ("风力3-4级", "风力三到四级"),
        ("3+5=8", "三加五等于八"),
        ("2024-06-18", "二零二四年六月十八日"),
        ("还剩1/3", "还剩三分之一"),
        ("第2个，2个", "第二个,两个"),
        ("功率1500W", "功率一千五百瓦"),
        ("打开Home Assistant的灯", "打开的灯"),
        ("已經關閉", "已经关闭"),
    ],
)
def test_smart_home_normalization(text: str, expected: str) -> None:
    assert g2p_zh.normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "，。！？", "...", "😀👍", "\x00\x07\x1b[0m", "ABC", "   ", "嗯呣", "兙", "\u3000好"],
)
def test_bad_input_does_not_crash(text: str) -> None:
    phones, word2ph, norm_text = g2p_zh.clean(text)
    assert word2ph is not None
    assert len(word2ph) == len(norm_text) and sum(word2ph) == len(phones)
    assert all(p in symbol_to_id("v2") for p in phones)


def test_only_punctuation_keeps_one_mark() -> None:
    assert g2p_zh.clean("，。！？") == ([","], [1], ",")


def test_long_text() -> None:
    text = "今天下午3点15分，客厅温度21.5°C，湿度45%。" * 2200  # ~100 kB of UTF-8
    assert len(text.encode()) > 100_000
    phones, word2ph, norm_text = g2p_zh.clean(text)
    assert word2ph is not None and len(word2ph) == len(norm_text)
    assert sum(word2ph) == len(phones) > 50_000


def test_clean_speed() -> None:
    sentence = "提醒您：下午3点15分要去幼儿园接孩子。"  # 20 characters
    g2p_zh.clean(sentence)  # warm-up: jieba dictionary, pypinyin tables
    runs = 50
    start = time.perf_counter()
    for _ in range(runs):
        g2p_zh.clean(sentence)
    per_sentence = (time.perf_counter() - start) / runs
    print(f"\nzh clean(): {per_sentence * 1000:.2f} ms per 20-char sentence")
    assert per_sentence < 0.05  # target is < 5 ms; loose bound for a shared CI machine


def _sentences() -> list[str]:
    """Normalized clauses of the golden corpus, plus text with Latin letters and digits."""
    texts = [g2p_zh.normalize(r["text"]) for r in RECORDS]
    return [*texts, "打开Home Assistant的灯3次", "的灯,的新歌.", "iPhone15和Wi-Fi 6"]


def test_pos_tokenizer_matches_jieba() -> None:
    """The tokenizer with the memoised HMM pass gives jieba's own words and tags,
    on the first call and on a cached one."""
    import jieba.posseg

    for text in _sentences():
        expected = [(p.word, p.flag) for p in jieba.posseg.dt.lcut(text)]
        for _ in range(2):
            assert [(p.word, p.flag) for p in g2p_zh._segmenter().lcut(text)] == expected, text
    assert g2p_zh._hmm_words.cache_info().hits > 0


def test_word_phones_cache_returns_the_uncached_reading() -> None:
    words = [
        (word, pos)
        for text in _sentences()
        for word, pos in pre_merge([(p.word, p.flag) for p in g2p_zh._segmenter().lcut(text)])
    ]
    for word, pos in words * 2:
        assert g2p_zh._word_phones(word, pos) == g2p_zh._word_phones.__wrapped__(word, pos)


def test_cached_finals_are_a_new_list_each_time() -> None:
    finals = finals_tone3("你好")
    finals[0] = "x"
    assert finals_tone3("你好") == ["i3", "ao3"]


def test_word_pinyin_is_lazy_pinyin() -> None:
    """One pass gives what the two ``lazy_pinyin`` calls give: on the corpus words, a
    sample of jieba's and pypinyin's dictionaries, and random strings of Han characters
    (with and without readings), punctuation, digits, Latin letters and CJK marks."""
    import random

    import jieba
    from pypinyin import Style, lazy_pinyin
    from pypinyin.constants import PHRASES_DICT

    jieba.dt.check_initialized()
    words = [w for text in _sentences() for w, _ in g2p_zh._segmenter().lcut(text)]
    words += list(jieba.dt.FREQ)[::40] + list(PHRASES_DICT)[::40]
    rnd = random.Random(7)
    chars = [chr(c) for c in range(0x4E00, 0xA000, 7)] + list("，。,.!?…-~ 09aZ〇々ー、ㄅ嗯儿")
    words += ["".join(rnd.choices(chars, k=rnd.randint(1, 8))) for _ in range(5000)]
    words += ["", " ", "𠀀"]
    for word in words:
        initials = lazy_pinyin(word, style=Style.INITIALS)
        finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
        assert word_pinyin(word) == (tuple(initials), tuple(finals)), word


def test_viterbi_is_jiebas() -> None:
    """The pruned Viterbi finds jieba's route and score: on the corpus's HMM runs and on
    random runs of Han characters, with and without rows in jieba's tables (a character
    without one can be any state) and pairs where no state of the next character can
    follow (jieba then takes every state that can)."""
    import random

    import jieba.posseg as posseg

    def jieba_viterbi(run: str) -> tuple[float, list[tuple[str, str]]]:
        tables = (posseg.char_state_tab_P, posseg.start_P, posseg.trans_P, posseg.emit_P)
        return posseg.viterbi(run, *tables)  # type: ignore[no-any-return]

    known = list(posseg.char_state_tab_P)
    unknown = [c for c in map(chr, range(0x4E00, 0x9FD6)) if c not in posseg.char_state_tab_P]
    runs = [run for text in _sentences() for run in posseg.re_han_detail.findall(text)]
    rnd = random.Random(9)
    for _ in range(1200):
        pool = known if rnd.random() < 0.8 else known[:2000] + unknown[:2000]
        runs.append("".join(rnd.choices(pool, k=rnd.randint(1, 5))))
    runs += ["麋妊", "胴很", "丂丄", "丂"]
    for run in runs:
        assert g2p_zh._viterbi(run) == jieba_viterbi(run), run
