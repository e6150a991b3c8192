"""``serve --backend tests/tiny_backend.py:make``: the real pipeline on tiny random models.

The pipeline is built exactly as ``serve`` builds it (``load_backend`` with no spec);
the only change is a cap on tokens per sentence, since random GPT weights never emit
EOS and would otherwise generate up to the GPT file's limit.
"""

from __future__ import annotations

from wyoming_sovits.cli.serve import load_backend
from wyoming_sovits.pipeline import Pipeline
from wyoming_sovits.settings import ServerSettings

MAX_TOKENS = 16


def make(settings: ServerSettings) -> Pipeline:
    backend = load_backend(None, settings)
    assert isinstance(backend, Pipeline), backend
    backend.max_new_tokens = MAX_TOKENS
    return backend
