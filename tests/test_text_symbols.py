"""Symbol tables: sizes, checkpoint ids and hashes from REFERENCE-NOTES §5.1, golden ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from wyoming_sovits.text.symbols import (
    SYMBOLS_V1,
    SYMBOLS_V2,
    UnknownSymbolVersionError,
    phones_to_ids,
    symbols,
)

TEXT_DIR = Path(__file__).parent / "data" / "contract" / "text"

CHECKPOINTS = {
    "!": 0,
    ",": 1,
    "-": 2,
    ".": 3,
    "?": 4,
    "AA": 5,
    "SP": 77,
    "SP2": 78,
    "SP3": 79,
    "UNK": 86,
    "_": 95,
    "a": 96,
    "a1": 97,
    "zh": 320,
    "…": 321,
}


def _sha(table: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(table).encode()).hexdigest()


def test_sizes_and_hashes() -> None:
    assert len(SYMBOLS_V1) == 322 and len(SYMBOLS_V2) == 732
    assert len(set(SYMBOLS_V2)) == 732
    assert _sha(SYMBOLS_V1).startswith("f7c3b280") and _sha(SYMBOLS_V1).endswith("e9a7ca6")
    assert _sha(SYMBOLS_V2).startswith("0771f6cd") and _sha(SYMBOLS_V2).endswith("d5674da7")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_checkpoint_ids(version: str) -> None:
    table = symbols(version)
    for symbol, index in CHECKPOINTS.items():
        assert table[index] == symbol


def test_v2_layout() -> None:
    assert SYMBOLS_V2[:322] == SYMBOLS_V1
    assert SYMBOLS_V2[322:324] == ("[", "]")
    assert SYMBOLS_V2[324] == "ㄱ" and SYMBOLS_V2[351:353] == ("停", "空")
    assert SYMBOLS_V2[353] == "Ya" and all(s.startswith("Y") for s in SYMBOLS_V2[353:])


def test_later_versions_share_v2() -> None:
    for version in ("v2Pro", "v2ProPlus", "v3", "v4"):
        assert symbols(version) is SYMBOLS_V2


def test_unknown_version() -> None:
    with pytest.raises(UnknownSymbolVersionError, match="v2ProPlus"):
        symbols("v9")


def test_unknown_phone_is_unk() -> None:
    assert phones_to_ids(["a1", "#", "Yaa1"], "v2") == [97, 86, SYMBOLS_V2.index("Yaa1")]
    assert phones_to_ids(["Yaa1"], "v1") == [86]


@pytest.mark.parametrize("name", ["zh", "en", "ja", "ko", "yue"])
def test_golden_ids(name: str) -> None:
    for line in (TEXT_DIR / f"clean_{name}.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert phones_to_ids(record["phones"], "v2") == record["ids"], record["text"]


def test_segment_ids() -> None:
    for line in (TEXT_DIR / "segment_mixed.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert phones_to_ids(record["phones"], "v2") == record["ids"], record["text"]
