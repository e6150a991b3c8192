"""Real HuBERT/BERT configs and the real roberta tokenizer (no weights), for building test models.

They ship in the PyPI wheel ``gpt-sovits-cpufast==0.1.0``. Installing that wheel would
overwrite real packages (it carries its own top-level ``jamo``), so ``script/setup --test``
downloads it and extracts only ``GPT_SoVITS/pretrained_models/`` into
``tests/data/pretrained/`` (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).parent / "data" / "pretrained"
HUBERT = "chinese-hubert-base"
BERT = "chinese-roberta-wwm-ext-large"


class PretrainedDataMissing(RuntimeError):
    """The test-only configs were not extracted; run ``script/setup --test``."""


def pretrained_dir(name: str) -> Path:
    """Folder with ``config.json`` (and ``tokenizer.json``/``preprocessor_config.json``) of ``name``."""
    folder = PRETRAINED_DIR / name
    if not (folder / "config.json").is_file():
        raise PretrainedDataMissing(
            f"{folder} has no config.json; run `script/setup --test` to extract the test data"
        )
    return folder
