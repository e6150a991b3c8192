"""A deterministic synthesis backend for server tests (no models, no torch).

Audio is a 220 Hz sine of ``SAMPLES_PER_CHAR`` samples per character of the sentence,
yielded in chunks of ``chunk_samples`` with an optional ``delay`` per chunk.  A sentence
containing ``fail_marker`` raises ``FakeSynthesisError`` after the first chunk.

``make`` is the ``--backend tests.fake_backend:make`` factory; the environment variables
``FAKE_BACKEND_DELAY`` (seconds per chunk) and ``FAKE_BACKEND_RATE`` tune it in
subprocess tests.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.server import AsyncServer, AsyncTcpServer

from wyoming_sovits.engine import Engine
from wyoming_sovits.handler import SovitsEventHandler
from wyoming_sovits.settings import ServerSettings, SynthesisConfig
from wyoming_sovits.voices import VoiceProfile, VoiceRegistry

SAMPLE_RATE = 16000
SAMPLES_PER_CHAR = 160  # 10 ms of audio per character
FAIL_MARKER = "EXPLODE"


class FakeSynthesisError(RuntimeError):
    """Injected failure."""


@dataclass(frozen=True)
class FakePrompt:
    voice: str
    style: str | None
    reference_text: str


@dataclass(frozen=True)
class SynthCall:
    text: str
    prompt: FakePrompt
    cfg: SynthesisConfig


def expected_samples(text: str) -> int:
    return len(text) * SAMPLES_PER_CHAR


class FakeBackend:
    """Implements ``engine.SynthesisBackend``; records what it was asked to do."""

    def __init__(
        self,
        *,
        sample_rate: int = SAMPLE_RATE,
        delay: float = 0.0,
        chunk_samples: int = 1600,
        fail_marker: str = FAIL_MARKER,
    ) -> None:
        self.sample_rate = sample_rate
        self.delay = delay
        self.chunk_samples = chunk_samples
        self.fail_marker = fail_marker
        self.calls: list[SynthCall] = []
        self.prepared: list[FakePrompt] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def prepare_prompt(self, voice: VoiceProfile) -> object:
        prompt = FakePrompt(voice.name, voice.style, voice.reference.text)
        with self._lock:
            self.prepared.append(prompt)
            self.threads.add(threading.current_thread().name)
        return prompt

    def synthesize(self, text: str, prompt: object, cfg: SynthesisConfig) -> Iterator[np.ndarray]:
        assert isinstance(prompt, FakePrompt)
        with self._lock:
            self.calls.append(SynthCall(text, prompt, cfg))
            self.threads.add(threading.current_thread().name)
        total = expected_samples(text)
        t = np.arange(total, dtype=np.float32) / self.sample_rate
        audio = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)  # (T,)
        for start in range(0, total, self.chunk_samples):
            if self.delay:
                time.sleep(self.delay)
            yield audio[start : start + self.chunk_samples]
            if self.fail_marker and self.fail_marker in text:
                raise FakeSynthesisError(f"injected failure for {text!r}")

    def texts(self) -> list[str]:
        with self._lock:
            return [call.text for call in self.calls]


def make(settings: ServerSettings) -> FakeBackend:
    """Factory for ``--backend tests.fake_backend:make``."""
    return FakeBackend(
        delay=float(os.environ.get("FAKE_BACKEND_DELAY", "0")),
        sample_rate=int(os.environ.get("FAKE_BACKEND_RATE", str(SAMPLE_RATE))),
    )


# -- shared test helpers ------------------------------------------------------------------


def write_voice(
    voices_dir: Path,
    name: str,
    *,
    languages: tuple[str, ...] = ("en_US",),
    display_name: str | None = None,
    extra: str = "",
) -> Path:
    """Create ``voices_dir/name/voice.yaml`` with a (dummy) reference clip."""
    folder = voices_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ref.wav").write_bytes(b"RIFF-not-decoded-by-the-registry")
    (folder / "calm.wav").write_bytes(b"RIFF-calm")
    lines = [
        f"display_name: {json.dumps(display_name or name.title())}",
        f"languages: [{', '.join(languages)}]",
        "reference:",
        "  audio: ref.wav",
        "  text: This is my reference voice.",
    ]
    (folder / "voice.yaml").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return folder


@dataclass
class RunningServer:
    port: int
    backend: FakeBackend
    engine: Engine
    registry: VoiceRegistry
    settings: ServerSettings

    def client(self, read_timeout: float = 10.0) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port, read_timeout=read_timeout)


@contextlib.asynccontextmanager
async def running_server(
    voices_dir: Path, backend: FakeBackend | None = None, **overrides: object
) -> AsyncIterator[RunningServer]:
    """A real Wyoming TCP server on a free loopback port, with the fake backend."""
    backend = backend or FakeBackend()
    settings = ServerSettings(uri="tcp://127.0.0.1:0", voices_dir=voices_dir, **overrides)  # type: ignore[arg-type]
    registry = VoiceRegistry(voices_dir)
    registry.scan()
    engine = Engine(backend, registry, settings)
    engine.start()
    server = AsyncServer.from_uri(settings.uri)
    assert isinstance(server, AsyncTcpServer)
    factory = functools.partial(
        SovitsEventHandler, engine=engine, registry=registry, settings=settings
    )
    await server.start(factory)
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    try:
        yield RunningServer(port, backend, engine, registry, settings)
    finally:
        await server.stop()
        await server._server.wait_closed()
        engine.close()


async def read_until(client: AsyncTcpClient, event_type: str) -> list[Event]:
    """Events up to and including the first ``event_type`` (fails on EOF)."""
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"connection closed before {event_type}: {events}"
        events.append(event)
        if event.type == event_type:
            return events
