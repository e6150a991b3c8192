"""Sentence splitting: the streaming splitter and the reference's cut methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wyoming_sovits.text.cleaner import TextFrontendError
from wyoming_sovits.text.split import (
    CUT_METHODS,
    StreamingSentenceSplitter,
    get_cut_method,
    pre_seg_text,
    replace_consecutive_punctuation,
    split_sentences,
)

SPLIT_FILE = Path(__file__).parent / "data" / "contract" / "text" / "split.jsonl"


def _records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SPLIT_FILE.read_text(encoding="utf-8").splitlines()]


RECORDS = _records()


def test_stream_releases_sentence_before_last_fragment() -> None:
    splitter = StreamingSentenceSplitter()
    assert splitter.add("Hel") == []
    assert splitter.add("lo there. How a") == ["Hello there."]
    assert splitter.add("re you? Fine.") == ["How are you?"]
    assert splitter.finish() == ["Fine."]


def test_stream_word_by_word_matches_whole_text() -> None:
    text = "It is 21.5 degrees at 7:30. Dr. Smith said e.g. tea is fine! Really?! Yes"
    splitter = StreamingSentenceSplitter()
    out: list[str] = []
    for word in text.split(" "):
        out += splitter.add(word + " ")
    out += splitter.finish()
    assert out == split_sentences(text)
    assert out == [
        "It is 21.5 degrees at 7:30.",
        "Dr. Smith said e.g. tea is fine!",
        "Really?!",
        "Yes",
    ]


def test_stream_character_by_character() -> None:
    text = "Version 2.5.1 is installed. Restart the hub, then check the lights."
    splitter = StreamingSentenceSplitter()
    out: list[str] = []
    for ch in text:
        out += splitter.add(ch)
    assert out == ["Version 2.5.1 is installed."]
    assert splitter.finish() == ["Restart the hub, then check the lights."]


def test_decimal_is_not_split_across_fragments() -> None:
    splitter = StreamingSentenceSplitter()
    assert splitter.add("It is 21.") == []
    assert splitter.add("5 degrees. Nice") == ["It is 21.5 degrees."]
    assert splitter.finish() == ["Nice"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Wait... what? No way!", ["Wait... what?", "No way!"]),
        ("Well… I see. Fine.", ["Well…", "I see.", "Fine."]),
        ("Mr. and Mrs. Smith arrived. Hi.", ["Mr. and Mrs. Smith arrived.", "Hi."]),
        (
            "今天天气很好。我们出去玩吧！你觉得呢？",
            ["今天天气很好。", "我们出去玩吧！", "你觉得呢？"],
        ),
        ("第一，关灯；第二，关窗。", ["第一，关灯；", "第二，关窗。"]),
        ("He said “hi.” Then left.", ["He said “hi.”", "Then left."]),
        ("line one\nline two", ["line one", "line two"]),
        ("Turn on the TV.然后调音量。", ["Turn on the TV.", "然后调音量。"]),
        ("... !!! ", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_cjk_end_waits_for_a_closing_quote() -> None:
    splitter = StreamingSentenceSplitter()
    assert splitter.add("他说：「好。") == []
    assert splitter.add("」然后") == ["他说：「好。」"]
    assert splitter.finish() == ["然后"]


def test_long_text_without_punctuation_streams_in_linear_time() -> None:
    splitter = StreamingSentenceSplitter()
    for _ in range(20_000):
        assert splitter.add("word ") == []
    (rest,) = splitter.finish()
    assert len(rest) == 20_000 * 5 - 1


@pytest.mark.parametrize("method", sorted(CUT_METHODS))
def test_cut_methods_match_reference(method: str) -> None:
    for record in RECORDS:
        assert get_cut_method(method)(record["text"]) == record[method], record["text"]


@pytest.mark.parametrize("method", sorted(CUT_METHODS))
def test_pre_seg_text_matches_reference(method: str) -> None:
    for record in RECORDS:
        text = replace_consecutive_punctuation(record["text"])
        want = record["pre_seg_text"][method]
        if isinstance(want, dict):  # the reference refused this input
            with pytest.raises(TextFrontendError):
                pre_seg_text(text, record["pre_seg_text_language"], method)
            continue
        got = pre_seg_text(text, record["pre_seg_text_language"], method)
        assert got == want, record["text"]


def test_unknown_cut_method_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="cut5"):
        get_cut_method("cut9")


def test_replace_consecutive_punctuation() -> None:
    assert replace_consecutive_punctuation("Wait...!? ok,,--") == "Wait. ok,"
