"""The Wyoming server with the real synthesis pipeline behind it (tiny random models, CPU).

The backend is built the way ``serve`` builds it (``cli.serve.load_backend`` on a data dir
laid out as ``download.py`` writes it: ``<data>/models/...``), the default voice is warmed
up before the server listens, and the voice is the repository's ``voices/austen`` (a
LibriVox clip). Random GPT weights never emit EOS, so each sentence is capped at
``MAX_TOKENS`` tokens: its audio is a whole number of tokens (1280 samples each at 32 kHz)
plus the voice's 0.3 s pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_backend import read_until
from scratch import scratch
from tiny_frontends import make_tiny_models_dir
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncServer, AsyncTcpServer
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from wyoming_sovits.cli.serve import _load_voices, load_backend
from wyoming_sovits.engine import Engine
from wyoming_sovits.generate import EOS_BLOCKED_STEPS
from wyoming_sovits.handler import SovitsEventHandler
from wyoming_sovits.pipeline import Pipeline
from wyoming_sovits.settings import ServerSettings
from wyoming_sovits.voices import VoiceRegistry

VOICE_DIR = Path(__file__).resolve().parent.parent / "voices" / "austen"
RATE = 32000
MAX_TOKENS = 16
SAMPLES_PER_TOKEN = 1280  # 25 Hz semantic tokens at 32 kHz
PAUSE = 9600  # the default 0.3 s after every sentence


@dataclasses.dataclass
class Loaded:
    engine: Engine
    registry: VoiceRegistry
    settings: ServerSettings


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """Models loaded and the voice warmed up once for the module, as ``serve`` does."""
    with scratch(tmp_path_factory, "pipeline-server") as root:
        yield from _load(root)


def _load(root: Path) -> Iterator[Loaded]:
    make_tiny_models_dir(root / "data" / "models")
    shutil.copytree(VOICE_DIR, root / "voices" / "austen")
    settings = ServerSettings(
        uri="tcp://127.0.0.1:0",
        data_dirs=(root / "data",),
        voices_dir=root / "voices",
        device="cpu",
        dtype="float32",
    )
    registry, default_voice = _load_voices(settings)
    settings = dataclasses.replace(settings, default_voice=default_voice)
    backend = load_backend(None, settings)
    assert isinstance(backend, Pipeline)
    backend.max_new_tokens = MAX_TOKENS
    engine = Engine(backend, registry, settings)
    engine.start()
    try:
        engine.warm_up([default_voice])
        assert engine.prompts_prepared == 1
        assert list((root / "data" / "cache").glob("prompt-*.npz"))  # serve's prompt cache
        yield Loaded(engine, registry, settings)
    finally:
        engine.close()


@contextlib.asynccontextmanager
async def serving(loaded: Loaded) -> AsyncIterator[int]:
    """A Wyoming server on a free loopback port (this test's event loop); yields the port."""
    server = AsyncServer.from_uri(loaded.settings.uri)
    assert isinstance(server, AsyncTcpServer)
    factory = functools.partial(
        SovitsEventHandler,
        engine=loaded.engine,
        registry=loaded.registry,
        settings=loaded.settings,
    )
    await server.start(factory)
    assert isinstance(server._server, asyncio.Server)
    try:
        yield server._server.sockets[0].getsockname()[1]
    finally:
        await server.stop()
        server._server.close()
        await server._server.wait_closed()


def client(port: int) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port, read_timeout=30.0)


def pcm(events: list[Event]) -> np.ndarray:
    chunks = [AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type)]
    return np.frombuffer(b"".join(chunks), dtype="<i2")


def assert_format(events: list[Event]) -> None:
    for event in events:
        if AudioStart.is_type(event.type) or AudioChunk.is_type(event.type):
            fmt = (event.data["rate"], event.data["width"], event.data["channels"])
            assert fmt == (RATE, 2, 1)


def assert_sentences_audio(audio: np.ndarray, sentences: int) -> None:
    """``sentences`` sentences of EOS_BLOCKED_STEPS..MAX_TOKENS tokens, each with its pause."""
    tokens = (len(audio) - sentences * PAUSE) / SAMPLES_PER_TOKEN
    assert tokens == int(tokens), len(audio)
    assert sentences * EOS_BLOCKED_STEPS <= tokens <= sentences * MAX_TOKENS
    assert np.all(audio[-PAUSE:] == 0)  # the last sentence's pause
    assert np.abs(audio[:-PAUSE]).max() > 100  # and speech-like samples before it


async def test_describe_lists_the_voice(loaded: Loaded) -> None:
    async with serving(loaded) as port, client(port) as c:
        await c.write_event(Describe().event())
        info = Info.from_event((await read_until(c, "info"))[-1])
    program = info.tts[0]
    assert program.installed and program.supports_synthesize_streaming
    assert [(v.name, v.description, v.languages) for v in program.voices] == [
        ("austen", "Austen (LibriVox)", ["en_US"])
    ]
    assert program.voices[0].installed


async def test_synthesize_two_sentences(loaded: Loaded) -> None:
    async with serving(loaded) as port, client(port) as c:
        voice = SynthesizeVoice(name="austen")
        start = time.perf_counter()
        await c.write_event(Synthesize(text="Hello there. How are you today?", voice=voice).event())
        events = await read_until(c, "audio-stop")
        seconds = time.perf_counter() - start
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop"
    assert set(types[1:-1]) == {"audio-chunk"} and len(types) > 3
    assert_format(events)
    audio = pcm(events)
    assert_sentences_audio(audio, 2)
    print(f"two sentences: {len(audio) / RATE:.2f} s of audio in {seconds:.2f} s")


async def test_streaming_flow(loaded: Loaded) -> None:
    async with serving(loaded) as port, client(port) as c:
        await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="austen")).event())
        await c.write_event(SynthesizeChunk(text="Hello the").event())
        await c.write_event(SynthesizeChunk(text="re. How a").event())
        # The first sentence is complete: its audio comes before the stream is stopped.
        first = await read_until(c, "audio-chunk")
        await c.write_event(SynthesizeChunk(text="re you today?").event())
        await c.write_event(Synthesize(text="Hello there. How are you today?").event())  # compat
        await c.write_event(SynthesizeStop().event())
        describe_start = time.perf_counter()
        async with client(port) as other:  # while the second sentence is synthesised
            await other.write_event(Describe().event())
            await read_until(other, "info")
        describe_s = time.perf_counter() - describe_start
        events = first + await read_until(c, "synthesize-stopped")
    types = [e.type for e in events]
    assert [t for t in types if t != "audio-chunk"] == [
        "audio-start",
        "audio-stop",
        "audio-start",
        "audio-stop",
        "synthesize-stopped",
    ]
    assert_format(events)
    stop = types.index("audio-stop")
    assert_sentences_audio(pcm(events[: stop + 1]), 1)
    assert_sentences_audio(pcm(events[stop + 1 :]), 1)
    assert describe_s < 0.2, describe_s
