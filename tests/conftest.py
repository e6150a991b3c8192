"""Shared test fixtures: paths to the contract data copied from shared/contract."""

from __future__ import annotations

import os
from pathlib import Path

# Without an NVIDIA GPU, Triton kernels (wyoming_sovits/kernels.py) run under Triton's CPU
# interpreter. Triton reads this once, when it is first imported (torch may import it), so
# it is set here, before any test module imports torch.
if not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

DATA_DIR = Path(__file__).parent / "data"
CONTRACT_DIR = DATA_DIR / "contract"


@pytest.fixture(scope="session")
def contract_dir() -> Path:
    return CONTRACT_DIR
