"""Shared test fixtures: paths to the contract data copied from shared/contract."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"
CONTRACT_DIR = DATA_DIR / "contract"


@pytest.fixture(scope="session")
def contract_dir() -> Path:
    return CONTRACT_DIR
