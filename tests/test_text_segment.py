"""Language segmentation against segment_mixed.jsonl (offline, lite detector)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wyoming_sovits.text.langseg import MODES, LangSegment, get_texts, segment

DATA = Path(__file__).parent / "data" / "contract" / "text" / "segment_mixed.jsonl"
RECORDS: list[dict[str, Any]] = [
    json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()
]

# Kana-free runs that the lite detector called Japanese inside Chinese text; we read them
# as Chinese (what the README's idealised detector does). Text -> our segments.
IDEALISED: dict[str, list[tuple[str, str]]] = {
    ".下午3点15分 remind me to call Dr. Smith.": [
        (".下午3点15分 ", "zh"),
        ("remind me to call Dr. Smith.", "en"),
    ],
    "下午3点15分 remind me to call Dr. Smith.": [
        ("下午3点15分 ", "zh"),
        ("remind me to call Dr. Smith.", "en"),
    ],
    "下午3点15分 remind me to call Dr.": [
        ("下午3点15分 ", "zh"),
        ("remind me to call Dr.", "en"),
    ],
    "Good morning! 今天是2025年1月1日。天气晴，适合出门。Have a nice day!": [
        ("Good morning! ", "en"),
        ("今天是2025年1月1日。天气晴，适合出门。", "zh"),
        ("Have a nice day!", "en"),
    ],
}


def _cases() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(text, mode, expected segments) for every get_phones_and_bert call recorded."""
    cases = []
    for record in RECORDS:
        mode = record["language"]
        calls = [(record["final_call_text"], record["segments"])]
        for sentence in record["preprocess"]["sentences"]:
            prefix = "." if sentence["retried_with_leading_period"] else ""
            calls.append((prefix + sentence["text"], sentence["segments"]))
        for text, segments in calls:
            want = [(s["text"], s["language"]) for s in segments]
            cases.append((text, mode, IDEALISED.get(text, want)))
    return cases


CASES = _cases()


def test_segments_match_reference() -> None:
    mismatches = [
        (text, mode)
        for text, mode, want in CASES
        if [(s.text, s.language) for s in segment(text, mode)] != want
    ]
    assert mismatches == []
    idealised = sum(1 for text, _, _ in CASES if text in IDEALISED)
    assert (len(CASES), idealised) == (80, 4)  # 76 exactly as recorded, 4 idealised


def test_default_language_forces_non_english_runs() -> None:
    segs = get_texts("YouTubeで音楽を再生します。", "ja")
    assert segs == [LangSegment("YouTube", "en"), LangSegment("で音楽を再生します。", "ja")]


def test_kanji_between_chinese_runs_is_chinese() -> None:
    assert segment("下午3点15分", "auto") == [LangSegment("下午3点15分", "zh")]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_keeps_all_text(mode: str) -> None:
    text = "今日は晴れ, the sky is blue. 오늘 날씨 좋아요"
    segs = segment(text, mode)
    assert "".join(s.text for s in segs).replace(" ", "") == text.replace(" ", "")
    assert {s.language for s in segs} <= {"zh", "ja", "ko", "en", "yue"}


def test_unknown_mode_lists_valid_modes() -> None:
    with pytest.raises(ValueError, match="all_ja"):
        segment("hello", "fr")
