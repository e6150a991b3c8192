"""Tiny random GPT-SoVITS weight files in the official framing, for fast tests and demos.

Usage: ``python tests/make_tiny_models.py OUT_DIR`` or ``make_tiny_models(out_dir)``.

The files go through the same writer and loader as real weights: s1 with ``model.`` names
and a plain-dict config, s2 with weight-norm pairs, the codebook's training state, version
tags (``05`` v2Pro, ``06`` v2ProPlus) and, for v2ProPlus, the config pickled as upstream's
``utils.HParams`` objects; sv as a bare state dict. Widths are small, but everything the
version rules and the runtime look at keeps its real size: s1 vocabularies 1025/732, s2
text table 732, HuBERT width 768, codebook 1024, the 640-sample upsampling chain, and the
v2Pro/v2ProPlus generator widths 512/768 that tell the two apart. Seeded: the same call
writes the same weights.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

if __name__ == "__main__":  # run as a script from a checkout: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wyoming_sovits.checkpoints import save_official
from wyoming_sovits.models.sv import SpeakerEncoder, SVConfig
from wyoming_sovits.models.t2s import T2SConfig, Text2Semantic
from wyoming_sovits.models.vits import SoVITS, VitsConfig

SEED = 1234

TINY_S1_CONFIG: dict[str, Any] = {
    "model": {
        "vocab_size": 1025,
        "phoneme_vocab_size": 732,
        "embedding_dim": 32,
        "hidden_dim": 32,
        "head": 2,
        "linear_units": 128,
        "n_layer": 2,
        "dropout": 0,
        "EOS": 1024,
        "random_bert": 0,
    },
    "data": {"max_sec": 54, "pad_val": 1024},
}

_S2_DATA = {
    "max_wav_value": 32768.0,
    "sampling_rate": 32000,
    "filter_length": 2048,
    "hop_length": 640,
    "win_length": 2048,
    "n_mel_channels": 128,
    "mel_fmin": 0.0,
    "mel_fmax": None,
    "add_blank": True,
    "n_speakers": 300,
    "cleaned_text": True,
}
_S2_TINY_MODEL = {
    "inter_channels": 16,
    "hidden_channels": 16,
    "filter_channels": 32,
    "n_heads": 2,
    "n_layers": 2,
    "kernel_size": 3,
    "p_dropout": 0.0,
    "resblock": "1",
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
    "upsample_rates": [10, 8, 2, 2, 2],
    "upsample_initial_channel": 32,
    "upsample_kernel_sizes": [16, 16, 8, 2, 2],
    "n_layers_q": 3,
    "use_spectral_norm": False,
    "gin_channels": 512,  # v1/v2 add ge to the 512-wide MRTE, so it cannot shrink
    "semantic_frame_rate": "25hz",
    "freeze_quantizer": True,
}
# Only the Pro family's generator width is a version rule (512 v2Pro, 768 v2ProPlus).
_S2_VERSION_MODEL: dict[str, dict[str, Any]] = {
    "v2": {},
    "v2Pro": {"gin_channels": 64, "upsample_initial_channel": 512},
    "v2ProPlus": {
        "gin_channels": 64,
        "upsample_initial_channel": 768,
        "upsample_kernel_sizes": [20, 16, 8, 2, 2],
    },
}
TINY_SV_CONFIG = SVConfig(m_channels=8, num_blocks=(1, 1, 1, 1), embedding_size=16)


def s2_hparams(version: str) -> dict[str, Any]:
    """The ``config`` an s2 file of ``version`` stores, with tiny widths."""
    model = {**copy.deepcopy(_S2_TINY_MODEL), **_S2_VERSION_MODEL[version], "version": version}
    return {
        "train": {"segment_size": 20480, "seed": SEED, "fp16_run": True},
        "data": dict(_S2_DATA),
        "model": model,
        "s2_ckpt_dir": "logs/s2/tiny",
        "content_module": "cnhubert",
        "name": f"tiny-{version}",
        "version": version,
    }


def _write_gpt(out: Path) -> Path:
    torch.manual_seed(SEED)
    model = Text2Semantic(T2SConfig.from_stored(TINY_S1_CONFIG["model"]))
    return save_official(
        out / "tiny-s1-v2.ckpt", "gpt", model.state_dict(), TINY_S1_CONFIG, info="GPT-e1"
    )


def _write_sovits(out: Path, version: str, hparams_object: bool) -> Path:
    torch.manual_seed(SEED)
    hps = s2_hparams(version)
    config = VitsConfig.from_hparams(hps, version)
    if config.is_pro:
        config = replace(config, sv_dim=TINY_SV_CONFIG.embedding_dim)
    model = SoVITS(config)
    return save_official(
        out / f"tiny-s2-{version}.pth",
        "sovits",
        model.state_dict(),
        hps,
        version=version,
        info="1epoch_10iteration",
        hparams_object=hparams_object,
    )


def _write_sv(out: Path) -> Path:
    torch.manual_seed(SEED)
    model = SpeakerEncoder(TINY_SV_CONFIG)
    return save_official(out / "tiny-sv.ckpt", "sv", model.state_dict())


def make_tiny_models(out_dir: str | Path) -> dict[str, Path]:
    """Write the tiny files into ``out_dir``; keys: gpt_v2, sovits_v2, sovits_v2Pro,
    sovits_v2ProPlus (tag 06, HParams-object config), sv."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        return {
            "gpt_v2": _write_gpt(out),
            "sovits_v2": _write_sovits(out, "v2", hparams_object=False),
            "sovits_v2Pro": _write_sovits(out, "v2Pro", hparams_object=False),
            "sovits_v2ProPlus": _write_sovits(out, "v2ProPlus", hparams_object=True),
            "sv": _write_sv(out),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the files into")
    args = parser.parse_args(argv)
    for name, path in make_tiny_models(args.out_dir).items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
