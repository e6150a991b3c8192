"""Japanese and Korean cleaners against the reference golden data (clean_ja/ko.jsonl).

Two layers: phonemes must match exactly (``g2p(norm_text)``), and ``normalize(text)``
must match the reference ``norm_text`` except for the listed, explained deviations.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from wyoming_sovits.text import clean_text, g2p_ja, g2p_ko
from wyoming_sovits.text.symbols import SYMBOLS_V2, phones_to_ids

DATA = Path(__file__).parent / "data"
MODULES: dict[str, ModuleType] = {"ja": g2p_ja, "ko": g2p_ko}


def _records(lang: str) -> list[dict[str, Any]]:
    path = DATA / "contract" / "text" / f"clean_{lang}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _deviations(lang: str) -> dict[str, dict[str, str]]:
    entries = yaml.safe_load((DATA / "text_deviations" / f"{lang}.yaml").read_text()) or []
    return {entry["input"]: entry for entry in entries}


@pytest.mark.parametrize("lang", ["ja", "ko"])
def test_phones_match_reference_exactly(lang: str) -> None:
    module = MODULES[lang]
    for record in _records(lang):
        phones, word2ph = module.g2p(record["norm_text"])
        phones = [p if p in SYMBOLS_V2 else "UNK" for p in phones]
        assert word2ph is None
        assert phones == record["phones"], record["text"]
        assert phones_to_ids(phones, "v2") == record["ids"], record["text"]


@pytest.mark.parametrize("lang", ["ja", "ko"])
def test_normalize_matches_reference_or_listed_deviation(lang: str) -> None:
    deviations = _deviations(lang)
    for record in _records(lang):
        ours = MODULES[lang].normalize(record["text"])
        if ours == record["norm_text"]:
            assert record["text"] not in deviations, f"stale deviation: {record['text']}"
            continue
        listed = deviations.get(record["text"])
        assert listed is not None, f"unlisted difference: {record['text']!r} -> {ours!r}"
        assert (listed["reference"], listed["ours"]) == (record["norm_text"], ours)


@pytest.mark.parametrize("lang", ["ja", "ko"])
def test_clean_text_gives_reference_ids(lang: str) -> None:
    for record in _records(lang)[:10]:
        cleaned = clean_text(record["text"], lang, "v2")
        assert list(cleaned.ids) == record["ids"], record["text"]
        assert cleaned.norm_text == record["norm_text"]


def test_japanese_marks_and_numbers() -> None:
    phones, _ = g2p_ja.g2p("21.5度（約）")
    assert "." in phones and phones.count("（") == 1  # number split at "."; brackets pass through
    assert clean_text("「はい」", "ja").phones[0] == "UNK"


def test_korean_quotes_and_spaces() -> None:
    phones, _ = g2p_ko.g2p('그가 "네"라고 말했다')
    assert "空" in phones and "停" in phones
    assert g2p_ko.g2p("ABC")[0][:3] == ["ㅇ", "ㅔ", "ㅇ"]  # letters are spelled out: 에이
