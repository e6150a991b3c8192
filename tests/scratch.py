"""Folders for module and session fixtures that are removed when the fixture is torn down.

pytest keeps ``tmp_path_factory`` folders until the session ends (and a passing test's
``tmp_path`` only because of ``tmp_path_retention_policy``). The model files the fixtures
write add up to gigabytes over the suite, and a CI machine can be short of disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def scratch(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    path = factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
