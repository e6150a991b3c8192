"""Bounded in-memory LRU of synthesised phrases (float32 PCM).

Assistants repeat themselves ("Done.", "The light is on."); with a fixed seed the same
text gives the same audio, so it need not be generated twice.  Only the engine's worker
thread touches the cache, hence no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .settings import SynthesisConfig


@dataclass(frozen=True)
class PhraseKey:
    """Everything that decides what a phrase sounds like."""

    voice: str
    style: str | None
    voice_mtime: float
    text: str
    cfg: SynthesisConfig


class PhraseCache:
    """LRU of at most ``max_entries`` phrases; ``max_entries == 0`` disables it."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[PhraseKey, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: PhraseKey) -> np.ndarray | None:
        """The cached audio (read-only) or ``None``; a hit makes the entry most recent."""
        audio = self._entries.get(key)
        if audio is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return audio

    def put(self, key: PhraseKey, audio: np.ndarray) -> None:
        """Store a copy of ``audio``, evicting the least recently used entries."""
        if self.max_entries == 0:
            return
        stored = np.array(audio, dtype=np.float32, copy=True)
        stored.setflags(write=False)
        self._entries[key] = stored
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
