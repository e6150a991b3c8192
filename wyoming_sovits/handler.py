"""The Wyoming protocol handler: one per connection; Home Assistant's view of the server.

``handle_event`` only dispatches and queues: each sentence is submitted to the engine at
once (so sentence N+1 is generated while N is sent) and an *outbox* task writes the audio
in order.  That keeps the event loop free (``describe`` answers at once during synthesis)
and lets audio of a streamed text go out while Home Assistant is still sending it.

Responses HA can rely on:

* ``synthesize`` → one ``audio-start``, ``audio-chunk``…, one ``audio-stop`` for the whole text.
* ``synthesize-start``/``-chunk``…/``-stop`` → one ``audio-start``/``-chunk``…/``-stop`` cycle
  per sentence as soon as the sentence is complete, ``synthesize-stopped`` last; the
  compatibility ``synthesize`` inside a stream is ignored.
* Any failure → ``error`` (``code`` = exception class name, ``VoiceNotFound`` for an unknown
  voice), then the response is ended at once (``audio-stop`` or ``synthesize-stopped``).
* Rate, width and channels are the same in every audio event.

Never imports torch (a test checks): all model work happens behind ``Engine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)
from wyoming.version import __version__ as WYOMING_VERSION

from .audio import float_to_pcm16
from .engine import Engine, SynthesisStream
from .info import build_info
from .settings import ServerSettings, SynthesisConfig
from .text.normalize import clean_input
from .text.split import StreamingSentenceSplitter
from .voices import VoiceNotFoundError, VoiceRegistry, frontend_language

_LOGGER = logging.getLogger(__name__)

WIDTH = 2  # 16-bit PCM
CHANNELS = 1
_CHUNK_TYPE = AudioChunk(rate=1, width=WIDTH, channels=CHANNELS, audio=b"").event().type


class TextTooLongError(ValueError):
    """The request text exceeds ``--max-text-chars``."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"Text has {length} characters, more than the limit of {limit} "
            "(raise it with --max-text-chars)"
        )


# -- audio ------------------------------------------------------------------------------


class _PcmChunker:
    """float32 audio of any length → int16 PCM payloads of exactly ``samples`` samples."""

    def __init__(self, samples: int) -> None:
        self._bytes = samples * WIDTH * CHANNELS
        self._pending = b""

    def add(self, audio: np.ndarray) -> list[bytes]:
        pcm = float_to_pcm16(audio)  # (T,) int16, rounded like every other writer
        data = self._pending + pcm
        cut = len(data) - len(data) % self._bytes
        self._pending = data[cut:]
        return [data[i : i + self._bytes] for i in range(0, cut, self._bytes)]

    def flush(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest else []


class _ChunkFramer:
    """``audio-chunk`` events as bytes on the wire, the bytes ``wyoming.event.async_write_event``
    writes for ``AudioChunk(...).event()`` (a test compares them), without an ``Event``, two
    dicts and two ``json.dumps`` per chunk: at 64 streams the server frames ~17,000 chunks a
    round of 8.6 s sentences, under the GIL the worker needs (9.2 -> 1.4 us a chunk here)."""

    def __init__(self, rate: int, width: int, channels: int) -> None:
        fmt = f'"rate": {int(rate)}, "width": {int(width)}, "channels": {int(channels)}'
        self._data = f'{{{fmt}, "timestamp": '
        self._head = f'{{"type": "{_CHUNK_TYPE}", "version": "{WYOMING_VERSION}", "data_length": '

    def frame(self, payload: bytes, timestamp: int | None) -> tuple[bytes, bytes]:
        """The event's header and data lines, then its payload (joined once, by the caller's
        write of all its chunks)."""
        data = f"{self._data}{'null' if timestamp is None else int(timestamp)}}}"
        head = f"{self._head}{len(data)}"
        head += f', "payload_length": {len(payload)}}}\n' if payload else "}\n"
        return (head + data).encode(), payload


# -- per-connection response state -------------------------------------------------------


@dataclass
class _Response:
    """One answer to one request (non-streaming ``synthesize`` or one text stream)."""

    streaming: bool
    failed: bool = False  # no more sentences are submitted
    ended: bool = False  # the terminator (audio-stop / synthesize-stopped) was written
    samples: int = 0  # sent so far, for chunk timestamps
    streams: list[SynthesisStream] = field(default_factory=list)


@dataclass
class _VoiceRequest:
    name: str
    style: str | None
    cfg: SynthesisConfig
    ssml: bool


@dataclass
class _TextStream:
    response: _Response
    voice: _VoiceRequest | None
    splitter: StreamingSentenceSplitter = field(default_factory=StreamingSentenceSplitter)
    chars: int = 0


@dataclass
class _Begin:
    response: _Response


@dataclass
class _Sentence:
    response: _Response
    stream: SynthesisStream


@dataclass
class _Fail:
    response: _Response
    error: Exception


@dataclass
class _End:
    response: _Response


_OutItem = _Begin | _Sentence | _Fail | _End


def error_code(err: BaseException) -> str:
    """The machine-readable ``code`` of an error event."""
    code = getattr(err, "code", None)
    return code if isinstance(code, str) else type(err).__name__


class SovitsEventHandler(AsyncEventHandler):
    """Answers one Wyoming connection; everything it needs is injected."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        engine: Engine,
        registry: VoiceRegistry,
        settings: ServerSettings,
    ) -> None:
        super().__init__(reader, writer)
        self._engine = engine
        self._registry = registry
        self._settings = settings
        self._client_id = engine.new_client_id()
        self._rate = engine.sample_rate
        self._framer = _ChunkFramer(self._rate, WIDTH, CHANNELS)
        self._outbox: asyncio.Queue[_OutItem] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._stream: _TextStream | None = None

    # -- dispatch ------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self._on_describe()
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif Synthesize.is_type(event.type):
            self._on_synthesize(event)
        elif SynthesizeStart.is_type(event.type):
            self._on_synthesize_start(event)
        elif SynthesizeChunk.is_type(event.type):
            self._on_synthesize_chunk(event)
        elif SynthesizeStop.is_type(event.type):
            self._on_synthesize_stop()
        else:
            _LOGGER.debug("Ignoring event %s", event.type)
        return True

    async def run(self) -> None:
        """The library's loop, but a lost or malformed connection is logged, not raised.

        Raised, it would end up as asyncio's "Task exception was never retrieved" traceback
        for every port scan or half-sent event.  The library's ``finally`` has already
        called ``disconnect`` and closed the socket either way.
        """
        try:
            await super().run()
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            _LOGGER.debug("Client %s: connection lost (%s)", self._client_id, err)
        except Exception as err:  # malformed event: the stream cannot be resynchronised
            _LOGGER.warning(
                "Client %s: closing the connection after a malformed event (%s: %s)",
                self._client_id,
                type(err).__name__,
                err,
                exc_info=_LOGGER.isEnabledFor(logging.DEBUG),
            )

    async def disconnect(self) -> None:
        """Client gone: drop its queued and running sentences, stop writing."""
        cancelled = self._engine.cancel_client(self._client_id)
        if cancelled:
            _LOGGER.debug("Client %s left; cancelled %d sentence(s)", self._client_id, cancelled)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None

    async def _on_describe(self) -> None:
        voices = self._registry.scan()
        await self.write_event(build_info(voices, self._settings).event())

    # -- requests ------------------------------------------------------------------------

    def _on_synthesize(self, event: Event) -> None:
        if self._stream is not None:
            _LOGGER.debug("Ignoring compatibility synthesize inside a text stream")
            return
        synthesize = Synthesize.from_event(event)
        response = _Response(streaming=False)
        try:
            self._check_length(len(synthesize.text))
            voice = self._voice_request(event.data, synthesize.text_format)
        except (TextTooLongError, VoiceNotFoundError) as err:
            self._enqueue(_Fail(response, err))
            return
        self._enqueue(_Begin(response))
        # Whole text at hand: clean first (joins lines, ends each with punctuation), then split.
        splitter = StreamingSentenceSplitter()
        text = clean_input(synthesize.text, ssml=voice.ssml)
        self._submit(response, voice, [*splitter.add(text), *splitter.finish()])
        self._enqueue(_End(response))

    def _on_synthesize_start(self, event: Event) -> None:
        if self._stream is not None:
            _LOGGER.warning("synthesize-start while a stream is open; ending the old stream")
            self._on_synthesize_stop()
        data = event.data or {}
        stream = _TextStream(response=_Response(streaming=True), voice=None)
        self._stream = stream
        try:
            stream.voice = self._voice_request(data, data.get("text_format"))
        except VoiceNotFoundError as err:
            stream.response.failed = True
            self._enqueue(_Fail(stream.response, err))

    def _on_synthesize_chunk(self, event: Event) -> None:
        stream = self._stream
        if stream is None:
            _LOGGER.warning("Ignoring synthesize-chunk outside a synthesize-start/stop stream")
            return
        text = SynthesizeChunk.from_event(event).text
        stream.chars += len(text)
        if stream.response.failed or stream.voice is None:
            return
        try:
            self._check_length(stream.chars)
        except TextTooLongError as err:
            stream.response.failed = True
            self._enqueue(_Fail(stream.response, err))
            return
        self._submit(stream.response, stream.voice, stream.splitter.add(text))

    def _on_synthesize_stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            # Nothing open (a stray stop): still answer, a client may be waiting for it.
            stream = _TextStream(response=_Response(streaming=True), voice=None)
        elif stream.voice is not None and not stream.response.failed:
            self._submit(stream.response, stream.voice, stream.splitter.finish())
        self._enqueue(_End(stream.response))

    # -- helpers -------------------------------------------------------------------------

    def _check_length(self, length: int) -> None:
        limit = self._settings.max_text_chars
        if limit and length > limit:
            raise TextTooLongError(length, limit)

    def _voice_request(self, data: Mapping[str, Any], text_format: object) -> _VoiceRequest:
        """Resolve the voice from the *raw* event data (``SynthesizeVoice`` drops language)."""
        raw = data.get("voice") or {}
        if not isinstance(raw, Mapping):
            raw = {}
        name = raw.get("name") or self._settings.default_voice
        if not name:
            names = self._registry.names()
            if not names:
                raise VoiceNotFoundError("(default)", [])
            name = names[0]
        try:
            self._registry.get(name)
        except VoiceNotFoundError:
            self._registry.scan()  # maybe added since the last describe
            self._registry.get(name)
        language = raw.get("language")
        text_language = frontend_language(language) if isinstance(language, str) else None
        speaker = raw.get("speaker")
        return _VoiceRequest(
            name=name,
            style=str(speaker) if speaker not in (None, "") else None,
            cfg=SynthesisConfig(text_language=text_language),
            ssml=str(text_format or "text").lower() == "ssml",
        )

    def _submit(self, response: _Response, voice: _VoiceRequest, sentences: list[str]) -> None:
        """Queue each sentence on the engine now and its audio in the outbox.

        Streamed fragments can only be cleaned once their sentence is complete, so every
        sentence is cleaned here (a no-op for already cleaned text).
        """
        for sentence in sentences:
            if response.failed:
                return
            text = clean_input(sentence, ssml=voice.ssml)
            if not text.strip():
                continue
            try:
                stream = self._engine.synthesize(
                    text, voice.name, voice.cfg, self._client_id, style=voice.style
                )
            except Exception as err:  # becomes an error event in order with the audio
                response.failed = True
                self._enqueue(_Fail(response, err))
                return
            response.streams.append(stream)
            self._enqueue(_Sentence(response, stream))

    def _enqueue(self, item: _OutItem) -> None:
        self._outbox.put_nowait(item)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop(), name="sovits outbox")

    # -- outbox ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, _Begin):
                    await self._write_audio_start(item.response)
                elif isinstance(item, _Sentence):
                    await self._send_sentence(item.response, item.stream)
                elif isinstance(item, _Fail):
                    await self._fail(item.response, item.error, sentence_open=False)
                else:
                    await self._end(item.response)
        except (ConnectionError, OSError) as err:
            _LOGGER.debug("Client %s: write failed (%s)", self._client_id, err)
            self._engine.cancel_client(self._client_id)

    async def _write_audio_start(self, response: _Response) -> None:
        await self.write_event(
            AudioStart(
                rate=self._rate, width=WIDTH, channels=CHANNELS, timestamp=self._ms(response)
            ).event()
        )

    async def _send_sentence(self, response: _Response, stream: SynthesisStream) -> None:
        if response.ended:
            stream.cancel()
            return
        chunker = _PcmChunker(self._settings.samples_per_chunk)
        started = False
        try:
            async for audio in stream:
                payloads = chunker.add(audio)
                if payloads:
                    if response.streaming and not started:
                        await self._write_audio_start(response)
                    started = True
                    await self._write_chunks(response, payloads)
            payloads = chunker.flush()
            if payloads:
                if response.streaming and not started:
                    await self._write_audio_start(response)
                started = True
                await self._write_chunks(response, payloads)
        except (ConnectionError, OSError):
            raise
        except Exception as err:  # the handler is where failures become error events
            stream.cancel()
            await self._fail(response, err, sentence_open=response.streaming and started)
            return
        if response.streaming and started:
            await self.write_event(AudioStop(timestamp=self._ms(response)).event())

    async def _write_chunks(self, response: _Response, payloads: list[bytes]) -> None:
        """``audio-chunk`` events, one per payload, framed here (``_ChunkFramer``) and sent
        in one write.

        A piece of audio is many chunks (a 0.3 s piece is ten of 1024 samples); writing
        each on its own cost three socket writes and a drain, and with 64 streams the event
        loop's share of the GIL slowed the worker (H200, 64 streams: the batch step 11.4 ms
        with 1024-sample chunks, 8.9 ms with 8192; bench/README run 6)."""
        frames: list[bytes] = []
        for payload in payloads:
            frames.extend(self._framer.frame(payload, self._ms(response)))
            response.samples += len(payload) // (WIDTH * CHANNELS)
        self.writer.write(b"".join(frames))
        await self.writer.drain()
        # Neither a write the socket buffers nor a chunk already queued gives the event loop
        # a turn: audio that comes faster than it is sent (a fast GPU, a long text, a cached
        # phrase) would keep this task running, and other connections (Home Assistant's
        # describe probe) would wait 0.1 to 0.3 s. One turn per piece lets them in.
        await asyncio.sleep(0)

    async def _fail(self, response: _Response, err: Exception, *, sentence_open: bool) -> None:
        """Report ``err`` and end the response at once, so the client never waits."""
        response.failed = True
        for stream in response.streams:
            stream.cancel()
        if response.ended:
            return
        _LOGGER.warning("Request failed: %s: %s", error_code(err), err)
        await self.write_event(Error(text=str(err), code=error_code(err)).event())
        if sentence_open or not response.streaming:
            await self.write_event(AudioStop(timestamp=self._ms(response)).event())
        if response.streaming:
            await self.write_event(SynthesizeStopped().event())
        response.ended = True

    async def _end(self, response: _Response) -> None:
        if response.ended:
            return
        response.ended = True
        response.streams.clear()
        if response.streaming:
            await self.write_event(SynthesizeStopped().event())
        else:
            await self.write_event(AudioStop(timestamp=self._ms(response)).event())

    def _ms(self, response: _Response) -> int:
        return response.samples * 1000 // self._rate
