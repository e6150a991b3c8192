"""The weight-compatibility contract's deterministic ``fill()`` (tests/data/contract/README.md).

Builds full-size state dicts, under the official tensor names, from the manifests, so
golden tests can run the real models without the (undownloadable) released weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import torch

CONTRACT_DIR = Path(__file__).parent / "data" / "contract"

_DTYPES = {
    "torch.float32": torch.float32,
    "torch.float16": torch.float16,
    "torch.int64": torch.int64,
    "torch.long": torch.int64,
    "float32": torch.float32,
    "float16": torch.float16,
    "int64": torch.int64,
}


def fill(name: str, shape: tuple[int, ...] | list[int], dtype: torch.dtype) -> torch.Tensor:
    """The contract's deterministic value for tensor ``name``."""
    shape = tuple(shape)
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") & (2**63 - 1)
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        t = 1 + 0.1 * t.abs()
    elif leaf == "running_mean":
        t = 0.1 * t
    elif leaf == "weight_g" or (len(shape) <= 1 and leaf in {"weight", "gamma", "g", "alpha"}):
        t = 1 + 0.1 * t
    elif len(shape) <= 1:
        t = 0.1 * t
    else:
        t = t / math.sqrt(math.prod(shape[1:]))
    return t.to(dtype)


@cache
def manifest(family: str) -> dict[str, Any]:
    """``family`` as in the file name: ``s1_v2``, ``s2_v2ProPlus``, ``sv_eres2netv2w24s4`` ..."""
    return json.loads((CONTRACT_DIR / f"manifest_{family}.json").read_text())


def dtype_of(name: str) -> torch.dtype:
    return _DTYPES[name]


def filled_state_dict(family: str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the manifest, filled, under its official name (float32 unless ``dtype``)."""
    out: dict[str, torch.Tensor] = {}
    for name, (shape, stored) in manifest(family)["state_dict"].items():
        want = dtype_of(stored)
        t = fill(name, shape, want if not want.is_floating_point else torch.float32)
        out[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


def fold_weight_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Test-side shortcut: ``x.weight_g``/``x.weight_v`` pairs -> ``x.weight`` (norm over dims != 0).

    Model golden tests use this to feed filled official tensors straight into our modules;
    the product's loader (``wyoming_sovits.checkpoints``) is tested on official-format files.
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in state_dict.items():
        if name.endswith(".weight_v"):
            continue
        if name.endswith(".weight_g"):
            base = name[: -len("_g")]
            out[base] = torch._weight_norm(state_dict[base + "_v"], t, 0)
        else:
            out[name] = t
    return out
