"""The Wyoming server over real loopback TCP with the fake backend (WYOMING.md tests 1–11)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_backend import (
    FAIL_MARKER,
    FakeBackend,
    RunningServer,
    expected_samples,
    read_until,
    running_server,
    write_voice,
)
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from wyoming_sovits.cli.health import check_health

TIMEOUT = 10.0


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    voices = tmp_path / "voices"
    write_voice(voices, "alice", languages=("en_US",), display_name="Alice")
    write_voice(
        voices,
        "bob",
        languages=("de_DE", "en_US"),
        display_name="Bob",
        extra="styles:\n  calm:\n    audio: calm.wav\n    text: Ganz ruhig.\n",
    )
    write_voice(voices, "oma", languages=("zh_CN",), display_name="Öma Ērna 奶奶")
    return voices


def audio_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type.startswith("audio-")]


def assert_constant_format(events: list[Event], rate: int) -> None:
    for event in events:
        if AudioStart.is_type(event.type) or AudioChunk.is_type(event.type):
            assert (event.data["rate"], event.data["width"], event.data["channels"]) == (rate, 2, 1)


def chunk_samples(events: list[Event]) -> int:
    return sum(AudioChunk.from_event(e).samples for e in events if AudioChunk.is_type(e.type))


def produced_samples(server: RunningServer) -> int:
    return sum(expected_samples(text) for text in server.backend.texts())


# 1
@pytest.mark.parametrize("streaming", [True, False])
async def test_describe_info(voices_dir: Path, streaming: bool) -> None:
    async with (
        running_server(voices_dir, streaming=streaming) as server,
        server.client() as client,
    ):
        info = Info.from_event(await _info(client))
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.installed and program.name and program.description and program.version
    assert program.attribution.name
    assert program.supports_synthesize_streaming is streaming
    assert [v.name for v in program.voices] == ["alice", "bob", "oma"]
    for voice in program.voices:
        assert voice.installed and voice.languages and voice.speakers is None
    assert program.voices[2].description == "Öma Ērna 奶奶"  # 11: non-ASCII round trip


async def _info(client: AsyncTcpClient) -> Event:
    await client.write_event(Describe().event())
    return (await read_until(client, "info"))[-1]


async def test_describe_rescans_voices(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        write_voice(voices_dir, "dave", languages=("en_GB",))
        info = Info.from_event(await _info(client))
        assert "dave" in [v.name for v in info.tts[0].voices]
        await client.write_event(
            Synthesize(text="Hi Dave.", voice=SynthesizeVoice(name="dave")).event()
        )
        events = await read_until(client, "audio-stop")
    assert chunk_samples(events) > 0


# 2
async def test_synthesize_three_sentences(voices_dir: Path) -> None:
    async with (
        running_server(voices_dir, samples_per_chunk=1000) as server,
        server.client() as client,
    ):
        text = "Hello there. How are you today? I am fine, thanks."
        await client.write_event(Synthesize(text=text).event())
        events = await read_until(client, "audio-stop")
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop"
    assert set(types[1:-1]) == {"audio-chunk"}
    assert types.count("audio-start") == 1 and types.count("audio-stop") == 1
    assert server.backend.texts() == ["Hello there.", "How are you today?", "I am fine, thanks."]
    assert chunk_samples(events) == produced_samples(server)
    assert_constant_format(events, server.engine.sample_rate)
    stamps = [e.data["timestamp"] for e in events if e.type == "audio-chunk"]
    assert stamps == sorted(stamps) and stamps[0] == 0


# 3
async def test_streaming_flow(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        await client.write_event(Event(type="synthesize-start"))  # no data at all, as HA 2025.8
        await client.write_event(SynthesizeChunk(text="Hel").event())
        await client.write_event(SynthesizeChunk(text="lo there. How a").event())
        early = await read_until(client, "audio-chunk")  # before synthesize-stop is sent
        await client.write_event(SynthesizeChunk(text="re you? Fine.").event())
        full = "Hello there. How are you? Fine."
        await client.write_event(Synthesize(text=full).event())  # compat: ignored
        await client.write_event(SynthesizeStop().event())
        events = early + await read_until(client, "synthesize-stopped")
    types = [e.type for e in events]
    assert types[-1] == "synthesize-stopped"
    assert types.count("audio-start") == 3 and types.count("audio-stop") == 3
    assert server.backend.texts() == ["Hello there.", "How are you?", "Fine."]
    assert chunk_samples(events) == produced_samples(server)
    assert_constant_format(events, server.engine.sample_rate)


# 4
async def test_streaming_then_non_streaming_on_one_connection(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="bob")).event())
        await client.write_event(SynthesizeChunk(text="First request.").event())
        await client.write_event(SynthesizeStop().event())
        first = await read_until(client, "synthesize-stopped")
        await client.write_event(Synthesize(text="Second request.").event())
        second = await read_until(client, "audio-stop")
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="Third one.").event())
        await client.write_event(SynthesizeStop().event())
        third = await read_until(client, "synthesize-stopped")
    assert chunk_samples(first) > 0 and chunk_samples(second) > 0 and chunk_samples(third) > 0
    assert server.backend.texts() == ["First request.", "Second request.", "Third one."]


# 5
async def test_unknown_events_ignored_and_ping(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        await client.write_event(Event(type="select-program", data={"name": "x"}))
        await client.write_event(Event(type="transcribe", data={"language": "en"}))
        await client.write_event(Event(type="some-future-event"))
        await client.write_event(Ping(text="are you there?").event())
        events = await read_until(client, "pong")
        assert Pong.from_event(events[-1]).text == "are you there?"
        assert len(events) == 1
        await client.write_event(Ping().event())
        assert (await read_until(client, "pong"))[-1].type == "pong"


# 6
async def test_voice_resolution(voices_dir: Path) -> None:
    async with (
        running_server(voices_dir, default_voice="alice") as server,
        server.client() as client,
    ):
        await client.write_event(Synthesize(text="Default voice.").event())
        await read_until(client, "audio-stop")
        await client.write_event(
            Synthesize(text="Known.", voice=SynthesizeVoice(name="bob")).event()
        )
        await read_until(client, "audio-stop")
        raw = {
            "text": "Raw data.",
            "voice": {"name": "oma", "language": "zh_CN", "speaker": "x"},
        }
        await client.write_event(Event(type="synthesize", data=raw))
        await read_until(client, "audio-stop")
        raw = {"text": "Styled.", "voice": {"name": "bob", "speaker": "calm"}}
        await client.write_event(Event(type="synthesize", data=raw))
        await read_until(client, "audio-stop")
        await client.write_event(
            Synthesize(text="Unknown.", voice=SynthesizeVoice(name="zed")).event()
        )
        unknown = await read_until(client, "audio-stop")
    calls = server.backend.calls
    assert [c.prompt.voice for c in calls] == ["alice", "bob", "oma", "bob"]
    assert calls[0].cfg.text_language is None
    assert calls[2].cfg.text_language == "zh"  # language read from the raw event data
    assert calls[2].prompt.style is None  # unknown speaker: main reference
    assert calls[3].prompt.style == "calm" and calls[3].prompt.reference_text == "Ganz ruhig."
    assert [e.type for e in unknown] == ["error", "audio-stop"]
    error = Error.from_event(unknown[0])
    assert error.code == "VoiceNotFound" and "alice, bob, oma" in error.text


# 7
async def test_engine_failure_ends_response(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client(read_timeout=5.0) as client:
        text = f"First sentence. Then {FAIL_MARKER} here. Never said."
        await client.write_event(Synthesize(text=text).event())
        events = await read_until(client, "audio-stop")
        assert [e.type for e in events if e.type != "audio-chunk"] == [
            "audio-start",
            "error",
            "audio-stop",
        ]
        assert Error.from_event(events[-2]).code == "FakeSynthesisError"
        # Streaming: the error ends the stream at once; the rest of it is ignored.
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text=f"{FAIL_MARKER} now. More").event())
        failed = await read_until(client, "synthesize-stopped")
        assert [e.type for e in failed if e.type != "audio-chunk"] == [
            "audio-start",
            "error",
            "audio-stop",
            "synthesize-stopped",
        ]
        await client.write_event(SynthesizeChunk(text=" text. And more.").event())
        await client.write_event(SynthesizeStop().event())
        await client.write_event(Synthesize(text="Still alive.").event())
        after = await read_until(client, "audio-stop")
        assert next(e.type for e in after) == "audio-start"  # no stray synthesize-stopped
        assert chunk_samples(after) == expected_samples("Still alive.")


async def test_text_too_long(voices_dir: Path) -> None:
    async with (
        running_server(voices_dir, max_text_chars=20) as server,
        server.client() as client,
    ):
        await client.write_event(Synthesize(text="x" * 21).event())
        events = await read_until(client, "audio-stop")
        await client.write_event(SynthesizeStart().event())
        for _ in range(3):
            await client.write_event(SynthesizeChunk(text="Ten chars.").event())
        await client.write_event(SynthesizeStop().event())
        streamed = await read_until(client, "synthesize-stopped")
    assert Error.from_event(events[0]).code == "TextTooLongError"
    assert "error" in [e.type for e in streamed]


# 8
async def test_describe_fast_during_synthesis(voices_dir: Path) -> None:
    backend = FakeBackend(delay=0.25, chunk_samples=400)  # 50 chunks: a 12 s synthesis
    async with running_server(voices_dir, backend=backend) as server:
        async with server.client() as busy:
            await busy.write_event(Synthesize(text="x" * 125 + ".").event())
            await read_until(busy, "audio-chunk")
            latencies = []
            for _ in range(5):
                async with server.client(read_timeout=1.0) as client:
                    start = time.perf_counter()
                    await client.write_event(Describe().event())
                    await read_until(client, "info")
                    latencies.append(time.perf_counter() - start)
                await asyncio.sleep(0.05)
        # The busy client is gone: its synthesis is cancelled and the next request runs.
        async with server.client() as client:
            start = time.perf_counter()
            await client.write_event(Synthesize(text="Next.").event())
            await read_until(client, "audio-stop")
            assert time.perf_counter() - start < 3.0
    assert max(latencies) < 0.2, latencies


# 9
async def test_concurrent_clients_and_disconnect(voices_dir: Path) -> None:
    backend = FakeBackend(delay=0.01)
    async with running_server(voices_dir, backend=backend) as server:

        async def one(text: str) -> int:
            async with server.client() as client:
                await client.write_event(Synthesize(text=text).event())
                return chunk_samples(await read_until(client, "audio-stop"))

        texts = ["Satellite one speaks. Twice over.", "Satellite two speaks. Also twice."]
        results = await asyncio.gather(*(one(t) for t in texts))
        assert results == [
            sum(expected_samples(s) for s in ("Satellite one speaks.", "Twice over.")),
            sum(expected_samples(s) for s in ("Satellite two speaks.", "Also twice.")),
        ]
        # Round-robin: the second client's first sentence did not wait for all of the first's.
        order = server.backend.texts()
        assert order.index("Satellite two speaks.") < order.index("Twice over.")

        backend.delay = 0.1
        async with server.client() as client:
            await client.write_event(Synthesize(text="Long one. " * 8 + "LAST.").event())
            await read_until(client, "audio-chunk")
        await asyncio.sleep(0.3)
        backend.delay = 0.0
        assert await one("Healthy again.") == expected_samples("Healthy again.")
    assert "LAST." not in server.backend.texts()


# 10
@pytest.mark.parametrize("text", ["", "   \n\t ", "🎉🎉🎉", "**"])
async def test_empty_text_gives_framing(voices_dir: Path, text: str) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        await client.write_event(Synthesize(text=text).event())
        events = await read_until(client, "audio-stop")
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text=text).event())
        await client.write_event(SynthesizeStop().event())
        streamed = await read_until(client, "synthesize-stopped")
    assert [e.type for e in events] == ["audio-start", "audio-stop"]
    assert [e.type for e in streamed] == ["synthesize-stopped"]
    assert server.backend.texts() == []


async def test_markdown_and_emoji_are_stripped(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        text = "# Weather 🌤️\n**Sunny** and _warm_ 😎.\n- Wind: `low`"
        await client.write_event(Synthesize(text=text).event())
        events = await read_until(client, "audio-stop")
    spoken = " ".join(server.backend.texts())
    assert chunk_samples(events) > 0
    assert not set("*#`😎🌤") & set(spoken)
    assert "Sunny" in spoken and "warm" in spoken


# 11
async def test_non_ascii_text_round_trips(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        text = "Grüße aus München. 你好，世界。"
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="oma")).event())
        events = await read_until(client, "audio-stop")
        await client.write_event(SynthesizeStart().event())
        for piece in ["Schö", "ne Grü", "ße. 你", "好。"]:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(SynthesizeStop().event())
        streamed = await read_until(client, "synthesize-stopped")
    texts = server.backend.texts()
    assert texts[:2] == ["Grüße aus München.", "你好，世界。"]
    assert texts[2:] == ["Schöne Grüße.", "你好。"]
    assert chunk_samples(events) + chunk_samples(streamed) == produced_samples(server)


async def test_health_check(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server:
        healthy, reason = await check_health(f"tcp://127.0.0.1:{server.port}", 2.0)
    assert healthy, reason
    assert "GPT-SoVITS" in reason and "alice" in reason
    healthy, reason = await check_health(f"tcp://127.0.0.1:{server.port}", 1.0)
    assert not healthy and "cannot talk" in reason


def test_handler_does_not_import_torch() -> None:
    code = (
        "import sys, wyoming_sovits.handler, wyoming_sovits.cli.serve, wyoming_sovits.engine;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_piece_of_audio_goes_out_in_one_write(
    voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunks of one piece the engine hands over are framed together and written once
    (a socket write and a drain per chunk made the event loop the batch's bottleneck)."""
    writes: list[int] = []  # audio-chunk headers per server-side write
    original = asyncio.StreamWriter.write

    def counting(self: asyncio.StreamWriter, data: bytes) -> None:
        if b'"audio-chunk"' in data:
            writes.append(data.count(b'"audio-chunk"'))
        original(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "write", counting)
    backend = FakeBackend(chunk_samples=2000)
    async with (
        running_server(voices_dir, backend, samples_per_chunk=100) as server,
        server.client() as client,
    ):
        await client.write_event(Synthesize(text="Hello there, how are you?").event())
        events = await read_until(client, "audio-stop")
    chunks = [e for e in events if e.type == "audio-chunk"]
    assert chunk_samples(events) == produced_samples(server)
    assert all(len(AudioChunk.from_event(e).audio) == 200 for e in chunks[:-1])
    pieces = -(-produced_samples(server) // 2000)
    assert sum(writes) == len(chunks) and len(writes) <= pieces + 1 < len(chunks)


class _Collect:
    """What ``async_write_event`` writes, as one byte string."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.parts.extend(data)

    async def drain(self) -> None:
        return None


@pytest.mark.parametrize("rate", [32000, 48000, 16000])
async def test_chunk_framer_writes_the_bytes_wyoming_writes(rate: int) -> None:
    """The handler frames audio-chunks itself; the bytes are wyoming's own, for timestamps of
    every width, none, and payloads of any length (an empty one has no payload_length)."""
    from wyoming.event import async_read_event, async_write_event

    from wyoming_sovits.handler import _ChunkFramer

    framer = _ChunkFramer(rate, 2, 1)
    for timestamp in (0, 7, 32, 999, 123456789, None):
        for payload in (bytes(2048), b"\x01\x02" * 5, b""):
            ours = b"".join(framer.frame(payload, timestamp))
            theirs = _Collect()
            chunk = AudioChunk(rate=rate, width=2, channels=1, audio=payload, timestamp=timestamp)
            await async_write_event(chunk.event(), theirs)  # type: ignore[arg-type]
            assert ours == b"".join(theirs.parts)
            reader = asyncio.StreamReader()
            reader.feed_data(ours)
            reader.feed_eof()
            event = await async_read_event(reader)
            assert event is not None and AudioChunk.is_type(event.type)
            back = AudioChunk.from_event(event)
            assert (back.rate, back.timestamp, back.audio) == (rate, timestamp, payload)


def test_pcm_chunker_rounds_clips_and_keeps_every_sample() -> None:
    """The server's PCM is the product's one conversion (rounded, clipped, symmetric), not a
    truncation toward zero that would flatten the quietest samples; pieces of any length
    come out as whole chunks with nothing lost at their seams."""
    import numpy as np

    from wyoming_sovits.audio import float_to_pcm16
    from wyoming_sovits.handler import _PcmChunker

    audio = np.array([0.0, 0.9 / 32767, -0.9 / 32767, 0.5, 1.7, -2.0, 1.0, -1.0], np.float32)
    values = np.frombuffer(float_to_pcm16(audio), "<i2").tolist()
    assert values == [0, 1, -1, 16384, 32767, -32767, 32767, -32767]
    chunker = _PcmChunker(3)
    out = chunker.add(audio[:5]) + chunker.add(audio[5:]) + chunker.flush()
    assert [len(c) for c in out] == [6, 6, 4]
    assert b"".join(out) == float_to_pcm16(audio)
