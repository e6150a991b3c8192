"""The public ``to_phones`` against segment_mixed.jsonl, and its error handling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from wyoming_sovits.text import TextFrontendError, clean_input, clean_text, to_phones
from wyoming_sovits.text.split import pre_seg_text, replace_consecutive_punctuation
from wyoming_sovits.text.symbols import phones_to_ids

DATA = Path(__file__).parent / "data" / "contract" / "text"
RECORDS: list[dict[str, Any]] = [
    json.loads(line)
    for line in (DATA / "segment_mixed.jsonl").read_text(encoding="utf-8").splitlines()
]
DEVIATION_DIR = Path(__file__).parent / "data" / "text_deviations"
LANGUAGES = ("zh", "en", "ja", "ko", "yue")


def _deviations() -> dict[tuple[str, str], str]:
    """(language, input) -> our normalized text, from the reviewed per-language lists."""
    out = {}
    for lang in LANGUAGES:
        for entry in yaml.safe_load((DEVIATION_DIR / f"{lang}.yaml").read_text("utf-8")) or []:
            out[(lang, str(entry["input"]))] = str(entry["ours"])
    return out


DEVIATIONS = _deviations()
# Calls whose language segmentation we deliberately change (kanji-only runs read as Chinese).
SEGMENT_DEVIATIONS: dict[str, dict[str, Any]] = {
    entry["input"]: entry
    for entry in yaml.safe_load((DEVIATION_DIR / "segment.yaml").read_text("utf-8"))
}


def _check_segments(text: str, got: list[Any], want: list[dict[str, Any]]) -> None:
    """Segments equal the reference's, except reviewed segmentation and normalization deviations.

    ``text`` is the text of the recorded call (with the retry's leading period).
    """
    listed = SEGMENT_DEVIATIONS.get(text)
    if listed is not None:
        assert [[s["text"], s["language"], s["norm_text"]] for s in want] == listed["reference"]
        assert [[s.text, s.language, s.norm_text] for s in got] == listed["ours"], text
        # Segments both sides agree on are still held to the reference below.
        shared = {(s.text, s.language) for s in got} & {(s["text"], s["language"]) for s in want}
        got = [s for s in got if (s.text, s.language) in shared]
        want = [s for s in want if (s["text"], s["language"]) in shared]
    assert [(s.text, s.language) for s in got] == [(s["text"], s["language"]) for s in want]
    for ours, ref in zip(got, want, strict=True):
        fixed = DEVIATIONS.get((ref["language"], ref["text"].strip()))
        if fixed is not None and fixed != ref["norm_text"]:
            assert ours.norm_text == fixed, ref["text"]
        else:
            assert list(ours.ids) == ref["ids"], ref["text"]


def _record_id(record: dict[str, Any]) -> str:
    return f"{record['language']}:{record['text'][:20]}"


@pytest.mark.parametrize("record", RECORDS, ids=[_record_id(r) for r in RECORDS])
def test_to_phones_matches_reference(record: dict[str, Any]) -> None:
    result = to_phones(record["text"], record["language"])
    _check_segments(record["final_call_text"], list(result.segments), record["segments"])
    deviating = record["final_call_text"] in SEGMENT_DEVIATIONS or any(
        (s["language"], s["text"].strip()) in DEVIATIONS for s in record["segments"]
    )
    if not deviating:
        assert list(result.ids) == record["ids"]
        assert result.norm_text == record["norm_text"]
    assert result.retried == record["retried_with_leading_period"]


@pytest.mark.parametrize("record", RECORDS, ids=[_record_id(r) for r in RECORDS])
def test_preprocess_sentences_match_reference(record: dict[str, Any]) -> None:
    pre = record["preprocess"]
    text = replace_consecutive_punctuation(record["text"])
    sentences = pre_seg_text(text, record["language"], pre["text_split_method"])
    assert sentences == pre["pre_seg_text"]
    for sentence, want in zip(sentences, pre["sentences"], strict=True):
        result = to_phones(sentence, record["language"])
        called = ("." if want["retried_with_leading_period"] else "") + sentence
        _check_segments(called, list(result.segments), want["segments"])
        assert result.retried == want["retried_with_leading_period"]


def test_every_segment_deviation_is_a_recorded_call() -> None:
    calls = {r["final_call_text"] for r in RECORDS} | {
        ("." if s["retried_with_leading_period"] else "") + s["text"]
        for r in RECORDS
        for s in r["preprocess"]["sentences"]
    }
    assert set(SEGMENT_DEVIATIONS) <= calls


def test_idealised_records_read_kanji_as_chinese() -> None:
    result = to_phones("下午3点15分 remind me to call Dr. Smith.", "auto")
    assert [s.language for s in result.segments] == ["zh", "en"]


def test_short_input_is_retried_with_leading_period() -> None:
    result = to_phones("はい", "ja")
    assert result.retried and result.segments[0].text == ".はい"
    assert result.phones[0] == "."


def test_phone_fields_are_consistent() -> None:
    result = to_phones("오늘 meeting은 3시에 시작해요.", "ko")
    assert result.ids == tuple(phones_to_ids(result.phones, "v2"))
    assert result.word2ph is None
    assert sum(len(s.ids) for s in result.segments) == len(result.ids)


@pytest.mark.parametrize("text", ["", "   ", "。！？", "...", "😀🎉", "\x00\x07"])
def test_nothing_to_say_raises(text: str) -> None:
    with pytest.raises(TextFrontendError):
        to_phones(text, "auto")


def test_unknown_language_lists_valid_codes() -> None:
    with pytest.raises(TextFrontendError, match="all_zh"):
        to_phones("hello", "fr")
    with pytest.raises(TextFrontendError, match="ko"):
        clean_text("hello", "xx")
    with pytest.raises(TextFrontendError, match="ja"):
        clean_text("안녕", "ko", version="v1")


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("こんにちは😀、元気？\x07", "ja"),
        ("안녕하세요 👋\u200b 반가워요\x1b", "ko"),
        ("今日は🎉晴れ\n明日は雨", "auto"),
    ],
)
def test_emoji_and_control_characters_do_not_crash(text: str, mode: str) -> None:
    assert to_phones(text, mode).ids
    assert to_phones(clean_input(text), mode).ids


def test_long_text_does_not_crash() -> None:
    sentence = "今日は晴れです。明日は雨が降るでしょう。"
    text = sentence * (100_000 // len(sentence))
    assert len(to_phones(text[:2_000], "ja").ids) > 1_000
    pieces = pre_seg_text(replace_consecutive_punctuation(text), "ja", "cut5")
    assert len(pieces) > 1_000 and all(len(p) <= 510 for p in pieces)


def test_clean_input_strips_markdown_and_ssml() -> None:
    text = "# Weather\n\n**Sunny** today 😀, see [the forecast](http://x.y)\n- item `one`"
    assert clean_input(text) == "Weather. Sunny today, see the forecast. item one."
    ssml = "<speak>Hello<break time='1s'/>world &amp; you</speak>"
    assert clean_input(ssml, ssml=True) == "Hello, world & you."
    assert clean_input("今天天气很好\n明天下雨") == "今天天气很好。明天下雨。"
    assert clean_input("no final mark", punctuate=False) == "no final mark"
    assert clean_input("It is 21.5°C\t\tnow\x00") == "It is 21.5°C now."
