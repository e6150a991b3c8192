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

CONTRACT = Path(__file__).parent / "data" / "contract"
TEXT_DIR = CONTRACT / "text"
# Names of the phoneme-embedding tensors in the weight manifests (GPT = s1, SoVITS = s2).
GPT_TEXT_EMBEDDING = "model.ar_text_embedding.word_embeddings.weight"
SOVITS_TEXT_EMBEDDING = "enc_p.text_embedding.weight"

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


def _embedding_rows(manifest: str, tensor: str) -> int:
    """First dimension of ``tensor`` in a weight manifest (``{name: [shape, dtype]}``)."""
    state = json.loads((CONTRACT / f"{manifest}.json").read_text(encoding="utf-8"))["state_dict"]
    shape, _dtype = state[tensor]
    return int(shape[0])


def test_tables_index_within_the_official_embeddings() -> None:
    # SoVITS selects its text embedding by version: 322 rows for v1, 732 for v2.
    assert _embedding_rows("manifest_s2_v1", SOVITS_TEXT_EMBEDDING) == len(SYMBOLS_V1) == 322
    assert _embedding_rows("manifest_s2_v2", SOVITS_TEXT_EMBEDDING) == len(SYMBOLS_V2) == 732
    assert _embedding_rows("manifest_s1_v2", GPT_TEXT_EMBEDDING) == len(SYMBOLS_V2)
    # The v1 GPT has 512 rows, of which the 322 v1 ids use the first ones.
    v1_gpt_rows = _embedding_rows("manifest_s1_v1", GPT_TEXT_EMBEDDING)
    assert v1_gpt_rows == 512 >= len(SYMBOLS_V1)
    assert max(phones_to_ids(list(SYMBOLS_V1), "v1")) < v1_gpt_rows


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
