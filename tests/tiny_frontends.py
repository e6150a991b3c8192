"""Tiny HuBERT and BERT folders, and a whole tiny models folder, for pipeline tests.

The configs and the tokenizer are the real ones (from the wheel ``gpt-sovits-cpufast``,
extracted by ``script/setup --test``, see ``tests/pretrained.py``); only depths and inner
widths shrink.
The widths the rest of the pipeline reads keep their real size: HuBERT's 768 (the SoVITS
``ssl_proj`` input) and BERT's 1024 (the GPT's ``bert_proj`` input), as does BERT's
vocabulary (the real tokenizer's ids). Weights are random and seeded; folders are written
with ``save_pretrained`` and read back by the product loaders, as real folders are.

Usage: ``python tests/tiny_frontends.py OUT_DIR`` writes a models folder in the layout of
``wyoming_sovits.download`` (v2ProPlus), usable with ``wyoming-sovits speak --data-dir``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

if __name__ == "__main__":  # run as a script from a checkout: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_tiny_models import make_tiny_models
from transformers import BertConfig, BertForMaskedLM, HubertConfig, HubertModel

from wyoming_sovits.download import weight_set

HUBERT = "chinese-hubert-base"
BERT = "chinese-roberta-wwm-ext-large"
SEED = 1234


def pretrained_dir(name: str) -> Path:
    """Config/tokenizer folder extracted by ``script/setup --test`` (see tests/pretrained.py).

    (Lead's note: the gpt-sovits-cpufast wheel is no longer installed, it overwrote `jamo`.)
    """
    from pretrained import pretrained_dir as extracted

    return extracted(name)


def _real_config(name: str) -> dict:
    return json.loads((pretrained_dir(name) / "config.json").read_text())


def make_tiny_hubert(folder: Path) -> Path:
    """A 1-layer HuBERT with the real conv strides (50 Hz frames) and 768-wide output."""
    raw = _real_config(HUBERT)
    raw.update(
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,  # kernels and strides stay: they set the frame rate
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = HubertModel(HubertConfig.from_dict(raw)).eval()
    model.save_pretrained(folder, safe_serialization=False)  # pytorch_model.bin, as released
    shutil.copy(pretrained_dir(HUBERT) / "preprocessor_config.json", folder)
    return folder


def make_tiny_bert(folder: Path) -> Path:
    """A 3-layer BERT (the pipeline keeps layers 1), 1024 wide, with the real tokenizer."""
    raw = _real_config(BERT)
    raw.update(num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    raw["torch_dtype"] = "float32"
    torch.manual_seed(SEED)
    model = BertForMaskedLM(BertConfig.from_dict(raw)).eval()
    model.save_pretrained(folder, safe_serialization=False)
    shutil.copy(pretrained_dir(BERT) / "tokenizer.json", folder)
    return folder


def make_tiny_models_dir(out_dir: str | Path, version: str = "v2ProPlus") -> Path:
    """A complete models folder for ``version`` in the layout ``Pipeline.load`` reads."""
    out = Path(out_dir)
    tiny = make_tiny_models(out / "tiny")
    source = {"gpt": tiny["gpt_v2"], "sovits": tiny[f"sovits_{version}"], "sv": tiny["sv"]}
    for file in weight_set(version):
        if file.role in source:
            target = out / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source[file.role], target)
    make_tiny_hubert(out / HUBERT)
    make_tiny_bert(out / BERT)
    shutil.rmtree(out / "tiny")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="models folder to write")
    parser.add_argument("--version", default="v2ProPlus", choices=["v2", "v2Pro", "v2ProPlus"])
    args = parser.parse_args(argv)
    print(make_tiny_models_dir(args.out_dir, args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
