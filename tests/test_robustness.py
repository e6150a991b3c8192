"""Robustness of the Wyoming server (issue "Wyoming server", robustness list).

Real loopback TCP servers with the fake backend: many concurrent clients, clients that
vanish mid-response, binary junk, huge and empty texts, unknown voices; after each abuse
``describe`` must still answer fast and no per-connection task may be left behind. The
last test runs the packaged ``serve`` command as a subprocess and watches its memory over
500 requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from fake_backend import (
    SAMPLE_RATE,
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
from wyoming.ping import Ping
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

REPO = Path(__file__).resolve().parent.parent
DESCRIBE_LIMIT_S = 0.2
HANDLER_TASK = "wyoming event handler"  # name the wyoming library gives each connection's task
OUTBOX_TASK = "sovits outbox"  # the handler's writer task


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    voices = tmp_path / "voices"
    write_voice(voices, "alice", display_name="Alice")
    write_voice(voices, "bob", languages=("de_DE",), display_name="Bob")
    return voices


# -- helpers ----------------------------------------------------------------------------


def chunk_samples(events: list[Event]) -> int:
    return sum(AudioChunk.from_event(e).samples for e in events if AudioChunk.is_type(e.type))


def assert_one_response(events: list[Event]) -> None:
    """Exactly audio-start, audio-chunk…, audio-stop in one constant format."""
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop", types
    assert set(types[1:-1]) == {"audio-chunk"}, types
    for event in events:
        if AudioStart.is_type(event.type) or AudioChunk.is_type(event.type):
            fmt = (event.data["rate"], event.data["width"], event.data["channels"])
            assert fmt == (SAMPLE_RATE, 2, 1)


async def describe_latency(server: RunningServer) -> float:
    """Seconds from connect to ``info`` on a fresh connection (as HA's 1 s probe does)."""
    start = time.perf_counter()
    async with server.client(read_timeout=2.0) as client:
        await client.write_event(Describe().event())
        info = Info.from_event((await read_until(client, "info"))[-1])
    assert [v.name for v in info.tts[0].voices] == ["alice", "bob"]
    return time.perf_counter() - start


async def synthesize(server: RunningServer, text: str, **voice: str) -> list[Event]:
    async with server.client() as client:
        request = Synthesize(text=text, voice=SynthesizeVoice(**voice) if voice else None)
        await client.write_event(request.event())
        return await read_until(client, "audio-stop")


def connection_tasks() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name() in (HANDLER_TASK, OUTBOX_TASK) and not t.done()
    ]


async def assert_healthy(server: RunningServer) -> None:
    """No connection left behind, ``describe`` fast, and a request gets its whole audio."""
    deadline = time.monotonic() + 5.0
    while connection_tasks() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not connection_tasks(), connection_tasks()
    latencies = [await describe_latency(server) for _ in range(3)]
    assert max(latencies) < DESCRIBE_LIMIT_S, latencies
    events = await synthesize(server, "Still here.")
    assert_one_response(events)
    assert chunk_samples(events) == expected_samples("Still here.")


def assert_no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR: in particular no "Task exception was never retrieved" traceback."""
    gc.collect()  # finished tasks report unretrieved exceptions when they are collected
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


@contextlib.asynccontextmanager
async def raw_connection(
    server: RunningServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def server_closes(reader: asyncio.StreamReader, timeout: float = 5.0) -> None:
    """Read (and drop) whatever the server still sends until it closes the connection."""

    async def drain() -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    await asyncio.wait_for(drain(), timeout)


# -- (a) many clients -----------------------------------------------------------------------


def _client_text(i: int) -> tuple[str, str]:
    return f"Client {'la' * (i + 1)} speaks.", "Goodbye now."


async def many_clients(server: RunningServer, n: int = 64) -> None:
    async def one(i: int) -> list[Event]:
        async with server.client(read_timeout=30.0) as client:
            await client.write_event(Synthesize(text=" ".join(_client_text(i))).event())
            return await read_until(client, "audio-stop")

    results = await asyncio.gather(*(one(i) for i in range(n)))
    for i, events in enumerate(results):
        assert_one_response(events)
        # Each client got its own audio, not a neighbour's (the lengths all differ).
        assert chunk_samples(events) == sum(expected_samples(s) for s in _client_text(i))


async def test_64_concurrent_clients(voices_dir: Path) -> None:
    backend = FakeBackend(delay=0.002, chunk_samples=800)  # chunks interleave across clients
    async with running_server(voices_dir, backend=backend) as server:
        await many_clients(server)
        assert len(server.backend.texts()) == 2 * 64
        await assert_healthy(server)


# -- (b) clients that vanish mid-response -----------------------------------------------------


async def vanishing_clients(server: RunningServer) -> None:
    backend = server.backend
    backend.delay = 0.05  # 50 ms per chunk: the responses are long enough to be cut short
    long_text = "Long one. " * 8 + "LAST. Tail"
    # Streaming, then a hard reset (RST) after the first audio.
    async with server.client() as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text=long_text).event())
        await read_until(client, "audio-chunk")
        assert client._writer is not None
        client._writer.transport.abort()
    # Non-streaming, then an orderly close (FIN) after the first audio.
    async with server.client() as client:
        await client.write_event(Synthesize(text=long_text).event())
        await read_until(client, "audio-chunk")
    # A stream that is never stopped: the client just goes away.
    async with server.client() as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="Never stopped. And ").event())
        await read_until(client, "audio-start")
    await asyncio.sleep(0.6)  # uncancelled, "LAST." would be spoken by now
    backend.delay = 0.0
    assert "LAST." not in backend.texts()  # the rest of each response was dropped


async def test_client_disconnects_mid_stream(
    voices_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(voices_dir) as server:
        await vanishing_clients(server)
        await assert_healthy(server)
    assert_no_errors_logged(caplog)


# -- (c) binary junk ------------------------------------------------------------------------------

_RNG = np.random.default_rng(1234)
JUNK: dict[str, tuple[bytes, bool]] = {  # name: (bytes, whether the client closes after them)
    "random bytes": (_RNG.integers(0, 256, 65536, dtype=np.uint8).tobytes(), False),
    "random bytes then close": (_RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes(), True),
    "huge header line": (b'{"type": "describe", "x": "' + b"a" * 1_000_000, False),
    "huge header line with newline": (b'{"x": "' + b"a" * 200_000 + b'"}\n', False),
    "invalid JSON": (b'{"type": "describe"\n', False),
    "JSON that is not an object": (b"[1, 2, 3]\n", False),
    "no type": (b'{"data": {"text": "hi"}}\n', False),
    "non-UTF-8 header": (b'{"type": "describe\xff\xfe"}\n', False),
    "data_length larger than what follows": (
        b'{"type": "synthesize", "data_length": 5000}\n{"text": "Hello."}',
        True,
    ),
    "payload_length larger than what follows": (
        b'{"type": "audio-chunk", "payload_length": 100000}\n' + b"\x00" * 1000,
        True,
    ),
    "data that is not JSON": (b'{"type": "synthesize", "data_length": 5}\nabcde', False),
    "synthesize without text": (b'{"type": "synthesize"}\n', False),
    "synthesize with a number as text": (b'{"type": "synthesize", "data": {"text": 5}}\n', False),
}


async def send_junk(server: RunningServer, junk: bytes, close: bool) -> None:
    async with raw_connection(server) as (reader, writer):
        writer.write(junk)
        with contextlib.suppress(ConnectionError):  # the server may hang up while we write
            await writer.drain()
            if close:
                writer.write_eof()
        # Whether it answers first (error, audio) or not, the server must hang up: it cannot
        # know where the next event starts.
        await server_closes(reader)


async def junk_in_flight(server: RunningServer) -> None:
    """Junk after a request whose audio is still being sent: the response is dropped."""
    server.backend.delay = 0.05
    async with raw_connection(server) as (reader, writer):
        request = Synthesize(text="Long one. " * 8 + "LAST.").event()
        await asyncio.wait_for(_write(writer, request), 5)
        assert b"audio-chunk" in await asyncio.wait_for(reader.readuntil(b"audio-chunk"), 5)
        writer.write(b"\x00\xff garbage\n")
        await server_closes(reader)
    await asyncio.sleep(0.6)  # uncancelled, "LAST." would be spoken by now
    server.backend.delay = 0.0
    assert "LAST." not in server.backend.texts()


async def _write(writer: asyncio.StreamWriter, event: Event) -> None:
    from wyoming.event import async_write_event

    await async_write_event(event, writer)


async def all_junk(server: RunningServer) -> None:
    for junk, close in JUNK.values():
        await send_junk(server, junk, close)
        assert await describe_latency(server) < DESCRIBE_LIMIT_S
    await junk_in_flight(server)


@pytest.mark.parametrize("name", list(JUNK))
async def test_junk_on_the_socket(
    voices_dir: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    junk, close = JUNK[name]
    async with running_server(voices_dir) as server:
        await send_junk(server, junk, close)
        await assert_healthy(server)
    assert_no_errors_logged(caplog)


async def test_junk_while_audio_is_sent(voices_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(voices_dir) as server:
        await junk_in_flight(server)
        await assert_healthy(server)
    assert_no_errors_logged(caplog)


# -- (d) 100 kB of text -------------------------------------------------------------------------

SENTENCE = "This is one sentence of a very long text. "
LONG_TEXT = (SENTENCE * (100_000 // len(SENTENCE) + 1))[:100_000]


async def long_text_unlimited(server: RunningServer) -> None:
    """100 kB are all spoken; ``describe`` stays fast while the audio streams out."""
    assert server.settings.max_text_chars == 0
    done = len(server.backend.texts())
    async with server.client(read_timeout=60.0) as client:
        await client.write_event(Synthesize(text=LONG_TEXT).event())
        events = await read_until(client, "audio-chunk")
        latencies = [await describe_latency(server) for _ in range(3)]  # while sending
        events += await read_until(client, "audio-stop")
    assert max(latencies) < DESCRIBE_LIMIT_S, latencies
    assert_one_response(events)
    texts = server.backend.texts()[done:]
    assert sum(len(t) for t in texts) >= 0.97 * len(LONG_TEXT)  # every sentence, no spaces
    assert chunk_samples(events) == sum(expected_samples(t) for t in texts)


async def test_100kb_text_without_limit(voices_dir: Path) -> None:
    async with running_server(voices_dir, max_text_chars=0) as server:
        await long_text_unlimited(server)
        await assert_healthy(server)


async def test_100kb_text_over_the_default_limit(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server, server.client() as client:
        assert server.settings.max_text_chars == 4000
        await client.write_event(Synthesize(text=LONG_TEXT).event())
        events = await read_until(client, "audio-stop")
        assert [e.type for e in events] == ["error", "audio-stop"]
        error = Error.from_event(events[0])
        assert error.code == "TextTooLongError" and "100000" in error.text

        # Streamed in 1 kB pieces: the piece that crosses the limit ends the stream at once.
        await client.write_event(SynthesizeStart().event())
        for start in range(0, len(LONG_TEXT), 1000):
            await client.write_event(SynthesizeChunk(text=LONG_TEXT[start : start + 1000]).event())
        await client.write_event(SynthesizeStop().event())
        streamed = await read_until(client, "synthesize-stopped")
        types = [e.type for e in streamed]
        assert types.count("error") == 1 and types[-1] == "synthesize-stopped"
        assert Error.from_event(streamed[types.index("error")]).code == "TextTooLongError"
        assert len(server.backend.texts()) <= 4000 // len(SENTENCE) + 1  # nothing after it

        # The rest of the stream was swallowed: the next event on this connection is ours.
        await client.write_event(Ping(text="after").event())
        assert (await client.read_event()) == Event(type="pong", data={"text": "after"})
        await client.disconnect()
        await assert_healthy(server)


# -- (e) empty text / (f) unknown voice ---------------------------------------------------------


async def empty_and_unknown(server: RunningServer) -> None:
    async with server.client() as client:
        for text in ("", " "):
            await client.write_event(Synthesize(text=text).event())
            assert [e.type for e in await read_until(client, "audio-stop")] == [
                "audio-start",
                "audio-stop",
            ]
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text=text).event())
            await client.write_event(SynthesizeStop().event())
            assert [e.type for e in await read_until(client, "synthesize-stopped")] == [
                "synthesize-stopped"
            ]

        zed = SynthesizeVoice(name="zed")
        await client.write_event(Synthesize(text="Who am I?", voice=zed).event())
        events = await read_until(client, "audio-stop")
        assert [e.type for e in events] == ["error", "audio-stop"]
        error = Error.from_event(events[0])
        assert error.code == "VoiceNotFound"
        assert "zed" in error.text and "alice" in error.text and "bob" in error.text

        await client.write_event(SynthesizeStart(voice=zed).event())
        streamed = await read_until(client, "synthesize-stopped")  # before any text is sent
        assert [e.type for e in streamed] == ["error", "synthesize-stopped"]
        assert Error.from_event(streamed[0]).code == "VoiceNotFound"
        await client.write_event(SynthesizeChunk(text="Ignored. All of it. ").event())
        await client.write_event(SynthesizeStop().event())
        await client.write_event(Ping(text="after").event())
        assert (await client.read_event()) == Event(type="pong", data={"text": "after"})

        # The same connection still serves a good request.
        await client.write_event(Synthesize(text="Hi Bob.", voice=SynthesizeVoice("bob")).event())
        events = await read_until(client, "audio-stop")
    assert_one_response(events)
    assert chunk_samples(events) == expected_samples("Hi Bob.")
    assert server.backend.texts()[-1:] == ["Hi Bob."]  # nothing of the failed requests ran


async def test_empty_text_and_unknown_voice(voices_dir: Path) -> None:
    async with running_server(voices_dir) as server:
        await empty_and_unknown(server)
        await assert_healthy(server)


# -- (g) all of it on one server --------------------------------------------------------------


async def test_describe_fast_after_all_abuse(
    voices_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scenarios: list[Callable[[RunningServer], Awaitable[None]]] = [
        many_clients,
        vanishing_clients,
        all_junk,
        long_text_unlimited,
        empty_and_unknown,
    ]
    async with running_server(voices_dir, max_text_chars=0) as server:
        for scenario in scenarios:
            await scenario(server)
        await assert_healthy(server)
        latencies = [await describe_latency(server) for _ in range(10)]
        print(f"describe after all abuse: max {max(latencies) * 1000:.1f} ms")
        assert max(latencies) < DESCRIBE_LIMIT_S, latencies
    assert_no_errors_logged(caplog)


# -- (h) memory over 500 requests (subprocess) ----------------------------------------------------

WARM_UP_REQUESTS = 50
MEASURED_REQUESTS = 500
# Every request synthesises ~80 characters: ~13 000 float32 samples (52 kB) in the engine
# and 26 kB of PCM on the wire.  Keeping as little as one response's PCM per request would
# add 500 × 26 kB = 13 MB; a leaked connection (handler, task, stream buffers) adds tens of
# kB and a file descriptor.  Measured growth is ~0.3 MB, almost all of it the fake
# backend's own call log (it records every request); 8 MB separates "steady" from
# "leaking" with room on both sides.
RSS_GROWTH_LIMIT_KB = 8 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _proc_status(pid: int) -> dict[str, int]:
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            status[key] = int(value.split()[0])
    status["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return status


async def _wait_for_port(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        assert proc.returncode is None, "server exited early"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"server did not listen on {port}")


async def _request(port: int, i: int) -> None:
    """One HA-style request on a new connection; streaming every third time."""
    text = f"Request {'x' * (i % 7)} of the memory test, a sentence of about a hundred chars."
    async with AsyncTcpClient("127.0.0.1", port, read_timeout=10.0) as client:
        if i % 3:
            await client.write_event(Synthesize(text=text).event())
            events = await read_until(client, "audio-stop")
        else:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text=text).event())
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, "synthesize-stopped")
    assert chunk_samples(events) > 0


async def test_rss_steady_over_500_requests(voices_dir: Path) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wyoming_sovits", "serve",
        "--uri", f"tcp://127.0.0.1:{port}", "--backend", "tests/fake_backend.py:make",
        "--voices-dir", str(voices_dir), "--no-warm-up",
        cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _wait_for_port(port, proc)
        for i in range(WARM_UP_REQUESTS):
            await _request(port, i)
        before = _proc_status(proc.pid)
        trace = []
        for i in range(MEASURED_REQUESTS):
            await _request(port, WARM_UP_REQUESTS + i)
            if (i + 1) % 100 == 0:
                trace.append(_proc_status(proc.pid)["VmRSS"])
        after = _proc_status(proc.pid)
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 30)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    growth = after["VmRSS"] - before["VmRSS"]
    print(
        f"RSS after {WARM_UP_REQUESTS} warm-up requests: {before['VmRSS']} kB; "
        f"every 100 of {MEASURED_REQUESTS} more: {trace} kB; growth {growth:+d} kB; "
        f"threads {before['Threads']}->{after['Threads']}, fds {before['fds']}->{after['fds']}"
    )
    assert proc.returncode == 0  # SIGTERM is a graceful stop
    assert growth < RSS_GROWTH_LIMIT_KB
    assert after["Threads"] == before["Threads"]
    assert after["fds"] <= before["fds"] + 1  # no socket left open per connection
