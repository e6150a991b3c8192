"""Home Assistant's reading logic (``homeassistant/components/wyoming/tts.py``) against the server."""

from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path

import pytest
import soundfile
from fake_backend import expected_samples, running_server, write_voice
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    write_voice(tmp_path / "voices", "alice")
    return tmp_path / "voices"


async def ha_get_tts_audio(
    port: int, text: str, voice: str, read_timeout: float = 10
) -> bytes | None:
    """``async_get_tts_audio``: WAV from the first chunk's format, stop at the first audio-stop."""
    async with AsyncTcpClient("127.0.0.1", port, read_timeout=read_timeout) as client:
        await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)).event())
        with io.BytesIO() as wav_io:
            wav_writer: wave.Wave_write | None = None
            while True:
                event = await client.read_event()
                if event is None:
                    return None  # HA: "No TTS from ..."
                if AudioStop.is_type(event.type):
                    break
                if AudioChunk.is_type(event.type):
                    chunk = AudioChunk.from_event(event)
                    if wav_writer is None:
                        wav_writer = wave.open(wav_io, "wb")  # noqa: SIM115 - closed below
                        wav_writer.setframerate(chunk.rate)
                        wav_writer.setsampwidth(chunk.width)
                        wav_writer.setnchannels(chunk.channels)
                    wav_writer.writeframes(chunk.audio)
            if wav_writer is not None:
                wav_writer.close()
            return wav_io.getvalue()


async def ha_stream_tts_audio(port: int, deltas: list[str], voice: str) -> bytes:
    """``async_stream_tts_audio``: a writer task sends the stream; the reader builds a WAV
    header from the first audio-start only (nframes = 0) and stops at synthesize-stopped."""
    async with AsyncTcpClient("127.0.0.1", port, read_timeout=10) as client:

        async def write() -> None:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name=voice)).event())
            for delta in deltas:
                await client.write_event(SynthesizeChunk(text=delta).event())
            await client.write_event(Synthesize(text="".join(deltas)).event())
            await client.write_event(SynthesizeStop().event())

        writer = asyncio.create_task(write())
        out = b""
        header_sent = False
        while True:
            event = await client.read_event()
            if event is None or SynthesizeStopped.is_type(event.type):
                break
            if AudioStart.is_type(event.type) and not header_sent:
                start = AudioStart.from_event(event)
                with io.BytesIO() as wav_io:
                    with wave.open(wav_io, "wb") as wav_file:
                        wav_file.setframerate(start.rate)
                        wav_file.setsampwidth(start.width)
                        wav_file.setnchannels(start.channels)
                    out += wav_io.getvalue()
                header_sent = True
            elif AudioChunk.is_type(event.type):
                out += AudioChunk.from_event(event).audio
        await writer
        return out


def parse_streamed_wav(data: bytes) -> tuple[int, int]:
    """(rate, frames) of HA's streamed WAV, whose header says 0 frames (players ignore it)."""
    with wave.open(io.BytesIO(data[:44]), "rb") as header:
        rate, width, channels = header.getframerate(), header.getsampwidth(), header.getnchannels()
    pcm = data[44:]
    fixed = io.BytesIO()
    with wave.open(fixed, "wb") as wav_file:
        wav_file.setframerate(rate)
        wav_file.setsampwidth(width)
        wav_file.setnchannels(channels)
        wav_file.writeframes(pcm)
    audio, sr = soundfile.read(io.BytesIO(fixed.getvalue()))
    return sr, len(audio)


async def test_ha_non_streaming(voices_dir: Path) -> None:
    async with running_server(voices_dir, streaming=False) as server:
        data = await ha_get_tts_audio(server.port, "Turning on the light. Done!", "alice")
        texts = server.backend.texts()
    assert data is not None
    audio, rate = soundfile.read(io.BytesIO(data))
    assert rate == server.engine.sample_rate
    assert texts == ["Turning on the light.", "Done!"]
    expected = sum(expected_samples(t) for t in texts)
    assert len(audio) == expected
    assert abs(len(audio) / rate - expected / rate) < 1e-6


async def test_ha_streaming(voices_dir: Path) -> None:
    deltas = ["The weat", "her today", " is sunny. Tomor", "row it will rain", "."]
    async with running_server(voices_dir) as server:
        data = await ha_stream_tts_audio(server.port, deltas, "alice")
        texts = server.backend.texts()
    assert texts == ["The weather today is sunny.", "Tomorrow it will rain."]
    rate, frames = parse_streamed_wav(data)
    assert rate == server.engine.sample_rate
    assert frames == sum(expected_samples(t) for t in texts)
