"""Cantonese frontend against the golden corpus (phones exact; normalization exact or listed)."""

from __future__ import annotations

from typing import Any

import pytest
from test_text_zh import deviations, golden

from wyoming_sovits.text import g2p_yue
from wyoming_sovits.text.symbols import UNK, phones_to_ids, symbol_to_id

RECORDS = golden("yue")
DEVIATIONS = deviations("yue")


def _ids(record: dict[str, Any]) -> str:
    return record["text"][:24]


@pytest.mark.parametrize("record", RECORDS, ids=_ids)
def test_phonemes(record: dict[str, Any]) -> None:
    phones, word2ph = g2p_yue.g2p(record["norm_text"])
    table = symbol_to_id("v2")
    phones = [p if p in table else UNK for p in phones]
    assert phones == record["phones"]
    assert word2ph == record["word2ph"]
    assert phones_to_ids(phones, "v2") == record["ids"]


@pytest.mark.parametrize("record", RECORDS, ids=_ids)
def test_normalization(record: dict[str, Any]) -> None:
    ours = g2p_yue.normalize(record["text"])
    deviation = DEVIATIONS.get(record["text"])
    if deviation is None:
        assert ours == record["norm_text"]
    else:
        assert deviation["reference"] == record["norm_text"]
        assert ours == deviation["ours"] != record["norm_text"]


def test_every_deviation_is_a_golden_input() -> None:
    assert set(DEVIATIONS) <= {r["text"] for r in RECORDS}


@pytest.mark.parametrize(
    ("syllable", "phones"),
    [
        ("gwong2", ["Ygw", "Yong2"]),
        ("aai3", ["Yaa", "Yi3"]),  # first prefix match wins, as in the reference
        ("m4", ["Ym", "Ym4"]),
        ("ng5", ["Yng", "Yg5"]),
        ("ngaa4", ["Yng", "Yaa4"]),
        ("hou2", ["Yh", "You2"]),
    ],
)
def test_syllable_split(syllable: str, phones: list[str]) -> None:
    assert g2p_yue.syllable_phones(syllable) == phones


def test_smart_home() -> None:
    assert g2p_yue.normalize("室溫21.5°C，濕度45%。") == "室温二十一点五度,湿度百分之四十五."
    phones, word2ph, norm_text = g2p_yue.clean("開燈！")
    assert norm_text == "开灯!" and word2ph == [2, 2, 1]
    assert phones == ["Yh", "Yoi1", "Yd", "Yang1", "!"]


@pytest.mark.parametrize("text", ["", "……", "😀", "\x00\x1b", "ABC", "兙好", "   "])
def test_bad_input_does_not_crash(text: str) -> None:
    phones, word2ph, norm_text = g2p_yue.clean(text)
    assert word2ph is not None
    assert len(word2ph) == len(norm_text) and sum(word2ph) == len(phones)
    assert all(p in symbol_to_id("v2") for p in phones)


def test_long_text() -> None:
    text = "今日天氣好好，記得帶遮。" * 3000
    phones, word2ph, norm_text = g2p_yue.clean(text)
    assert word2ph is not None and len(word2ph) == len(norm_text)
    assert sum(word2ph) == len(phones)
