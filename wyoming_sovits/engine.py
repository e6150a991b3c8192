"""The runtime around one synthesis backend: a single worker thread owns it (and the GPU).

Connections submit sentences with ``Engine.synthesize``; the worker takes them from a fair
queue (round-robin over clients, so two satellites share the GPU) and streams each
sentence's audio back to the submitting event loop as it is produced.  Submitting returns
at once, so a handler can queue sentence N+1 while sentence N is still being sent.

Also here: the LRU of prepared voice prompts (keyed by voice, style and file mtimes; the
default voice is pinned), the phrase cache, warm-up, and cancellation of a client's work
when it disconnects.  No Wyoming types; torch is only ever imported by the backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import logging
import sys
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Protocol

import numpy as np

from .phrase_cache import PhraseCache, PhraseKey
from .settings import ServerSettings, SynthesisConfig
from .voices import VoiceProfile, VoiceRegistry

_LOGGER = logging.getLogger(__name__)

_WARM_UP_TEXT = {
    "zh": "你好，欢迎回家。",
    "yue": "你好，欢迎回家。",
    "ja": "こんにちは、お帰りなさい。",
    "ko": "안녕하세요, 어서 오세요.",
}
_WARM_UP_DEFAULT = "Hello, welcome home."


def freeze_heap() -> None:
    """Collect once, then move every object alive now (models, graphs, caches: 380,000 to
    560,000 after loading the full-size models) out of the garbage collector's sight
    (``gc.freeze``). Its full collections, rare while serving, otherwise walk them all with
    the GIL held: 171 ms on two CPU cores, while the worker feeds no GPU work."""
    gc.collect()
    gc.freeze()


class SynthesisBackend(Protocol):
    """What the engine needs from a synthesis pipeline (``pipeline.Pipeline`` in production)."""

    @property
    def sample_rate(self) -> int:
        """Rate of every chunk ``synthesize`` yields."""
        ...

    def prepare_prompt(self, voice: VoiceProfile) -> object:
        """Turn a voice's reference clip(s) into the opaque prompt ``synthesize`` takes."""
        ...

    def synthesize(self, text: str, prompt: object, cfg: SynthesisConfig) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks of ``text`` spoken with ``prompt`` as they are produced;
        an empty chunk means "nothing yet, step the others" and is not sent."""
        ...


class EngineError(RuntimeError):
    """Base class of the engine's own errors."""


class EngineClosedError(EngineError):
    """The engine was shut down (or never started) before the request could run."""

    def __init__(self) -> None:
        super().__init__("The synthesis engine is not running; restart the server")


class WarmUpError(EngineError):
    """Preparing or warming up a voice at start-up failed."""


_END = object()  # end-of-stream marker on a SynthesisStream queue
# With several streams the worker runs long stretches of Python (a batch's bookkeeping,
# planning its decodes) between the GPU calls that release the GIL, and the event loop,
# which reads each request and sends each chunk, waits up to the interpreter's switch
# interval (5 ms by default) every time it wants the GIL back. A batching engine shortens
# the interval to this while it runs (restored at close).
BATCHING_SWITCH_INTERVAL_S = 0.0005


class _Job(ABC):
    """One unit of work for the worker thread."""

    def __init__(self, client_id: Hashable) -> None:
        self.client_id = client_id
        self.cancelled = threading.Event()

    @abstractmethod
    def run(self, engine: Engine) -> None:
        """Do the work (on the worker thread); must not raise."""

    def abort(self, reason: BaseException | None) -> None:
        """Drop the job without running it."""
        self.cancelled.set()


class _CallJob(_Job):
    """Run a function on the worker thread and hand its result to a future."""

    def __init__(self, client_id: Hashable, fn: Callable[[], object]) -> None:
        super().__init__(client_id)
        self.fn = fn
        self.future: concurrent.futures.Future[object] = concurrent.futures.Future()

    def run(self, engine: Engine) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.fn())
        except Exception as err:  # handed to the waiting caller, which re-raises it
            self.future.set_exception(err)

    def abort(self, reason: BaseException | None) -> None:
        super().abort(reason)
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(reason or EngineClosedError())


class _SynthJob(_Job):
    """Synthesise one sentence and push its chunks onto an asyncio queue."""

    def __init__(
        self,
        client_id: Hashable,
        text: str,
        voice: VoiceProfile,
        cfg: SynthesisConfig,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(client_id)
        self.text = text
        self.voice = voice
        self.cfg = cfg
        self.loop = loop
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    def deliver(self, item: object) -> None:
        """Hand a chunk (or ``_END`` or an exception) to the event loop, from any thread."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    def run(self, engine: Engine) -> None:
        """Synthesise the whole sentence at once (the worker steps it instead, see ``_run``)."""
        running = engine._begin(self)
        while running is not None and engine._step(running):
            pass

    def abort(self, reason: BaseException | None) -> None:
        super().abort(reason)
        self.deliver(reason if reason is not None else _END)


class _Running:
    """A sentence the worker is stepping: its chunk iterator and the audio sent so far."""

    def __init__(self, job: _SynthJob, chunks: Iterator[np.ndarray], key: PhraseKey | None):
        self.job, self.chunks, self.key = job, chunks, key
        self.pieces: list[np.ndarray] = []

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()  # let a generator release its buffers (and batch row) now


class SynthesisStream:
    """The audio of one submitted sentence: ``async for chunk in stream`` (float32 mono).

    Raises the backend's exception if synthesis fails.  ``cancel()`` drops the work (the
    worker stops at its next chunk); the engine also cancels a client's streams when the
    handler calls ``Engine.cancel_client``.
    """

    def __init__(self, job: _SynthJob, sample_rate: int) -> None:
        self._job = job
        self.sample_rate = sample_rate
        self.voice = job.voice
        self.cfg = job.cfg
        self._done = False

    def __aiter__(self) -> SynthesisStream:
        return self

    async def __anext__(self) -> np.ndarray:
        if self._done:
            raise StopAsyncIteration
        item = await self._job.queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        assert isinstance(item, np.ndarray)
        return item

    def cancel(self) -> None:
        self._job.cancelled.set()
        self._done = True


class _FairQueue:
    """Jobs per client, served round-robin across clients, FIFO within one client."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[Hashable, deque[_Job]] = {}
        self._order: deque[Hashable] = deque()
        self._closed = False

    def put(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                raise EngineClosedError()
            if job.client_id not in self._jobs:
                self._jobs[job.client_id] = deque()
                self._order.append(job.client_id)
            self._jobs[job.client_id].append(job)
            self._cond.notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, block: bool = True) -> _Job | None:
        """The next job (waiting for one if ``block``); ``None`` once the queue is closed,
        or when it is empty and not ``block``."""
        with self._cond:
            while block and not self._order and not self._closed:
                self._cond.wait()
            if self._closed or not self._order:
                return None
            client = self._order.popleft()
            jobs = self._jobs[client]
            job = jobs.popleft()
            if jobs:
                self._order.append(client)  # back of the line: the others go first
            else:
                del self._jobs[client]
            return job

    def remove_client(self, client_id: Hashable) -> list[_Job]:
        with self._cond:
            jobs = self._jobs.pop(client_id, None)
            if jobs is None:
                return []
            self._order.remove(client_id)
            return list(jobs)

    def close(self) -> list[_Job]:
        with self._cond:
            self._closed = True
            jobs = [job for queue in self._jobs.values() for job in queue]
            self._jobs.clear()
            self._order.clear()
            self._cond.notify_all()
            return jobs


class _PromptCache:
    """LRU of prepared prompts keyed by (voice, style, mtime); pinned voices stay."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.pinned: set[str] = set()
        self._entries: OrderedDict[tuple[str, str | None, float], object] = OrderedDict()
        self.prepared = 0  # how many times a prompt had to be prepared (for tests and logs)

    def get(self, voice: VoiceProfile, prepare: Callable[[VoiceProfile], object]) -> object:
        key = (voice.name, voice.style, voice.mtime)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        # A changed voice.yaml or clip makes the old prompt of this voice stale.
        for stale in [k for k in self._entries if k[:2] == key[:2]]:
            del self._entries[stale]
        _LOGGER.info("Preparing voice prompt for %s", voice.name)
        prompt = prepare(voice)
        self.prepared += 1
        self._entries[key] = prompt
        evictable = [k for k in self._entries if k[0] not in self.pinned and k != key]
        while len(self._entries) > self.max_entries and evictable:
            del self._entries[evictable.pop(0)]
        return prompt


class Engine:
    """One worker thread owning ``backend``; an async API for the protocol handler."""

    def __init__(
        self, backend: SynthesisBackend, registry: VoiceRegistry, settings: ServerSettings
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._settings = settings
        self._queue = _FairQueue()
        self._prompts = _PromptCache(settings.prompt_cache_size)
        self.phrase_cache = PhraseCache(settings.phrase_cache_size)
        self._client_ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._switch_interval: float | None = None  # the interpreter's, while shortened
        self._froze = False  # warm-up froze the heap (``freeze_heap``); close thaws it
        self._running: set[_Job] = set()  # jobs the worker has started and not finished
        self._lock = threading.Lock()
        # Sentences stepped at once: a batching backend (``max_concurrent`` > 1) advances
        # all of their GPT rows in one decode step; otherwise one sentence at a time.
        self.capacity = max(1, int(getattr(backend, "max_concurrent", 1)))

    @property
    def sample_rate(self) -> int:
        return int(self._backend.sample_rate)

    @property
    def prompts_prepared(self) -> int:
        return self._prompts.prepared

    def new_client_id(self) -> int:
        """A fresh id for one connection (the unit of fairness and cancellation)."""
        return next(self._client_ids)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is not None:
            return
        if self.capacity > 1 and sys.getswitchinterval() > BATCHING_SWITCH_INTERVAL_S:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(BATCHING_SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._run, name="sovits-engine", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything pending and stop the worker (waits for the current chunk)."""
        for job in self._queue.close():
            job.abort(EngineClosedError())
        with self._lock:
            for job in self._running:
                job.cancelled.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                _LOGGER.warning("Synthesis worker did not stop within %.0f s", timeout)
            self._thread = None
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if self._froze:  # what warm-up froze is the collector's again (cycles freed)
            gc.unfreeze()
            self._froze = False

    def warm_up(self, voice_names: Sequence[str], *, pin: bool = True) -> None:
        """Prepare and pin the prompts of ``voice_names`` and synthesise one phrase each
        (after the backend's own ``warm_up(prompt, cfg)``, if it has one: graph capture).

        Blocks until done, so call it before listening.  Runs on the worker thread, since
        compiled graphs and CUDA state belong to the thread that created them.
        """
        for name in voice_names:
            voice = self._registry.get(name)
            if pin:
                self._prompts.pinned.add(voice.name)
            job = _CallJob("warm-up", lambda voice=voice: self._warm_voice(voice))  # type: ignore[misc]
            self._queue.put(job)
            try:
                job.future.result()
            except Exception as err:
                raise WarmUpError(f"Warming up voice {name!r} failed: {err}") from err
        freeze_heap()
        self._froze = True

    def _warm_voice(self, voice: VoiceProfile) -> None:
        prompt = self._prompts.get(voice, self._backend.prepare_prompt)
        text = _WARM_UP_TEXT.get(voice.text_language.removeprefix("all_"), _WARM_UP_DEFAULT)
        cfg = voice.synthesis.merged(self._settings.synthesis)
        capture = getattr(self._backend, "warm_up", None)  # optional: ahead-of-time graphs
        if callable(capture):
            capture(prompt, cfg)
        samples = sum(len(chunk) for chunk in self._backend.synthesize(text, prompt, cfg))
        _LOGGER.info("Warmed up voice %s (%d samples)", voice.name, samples)

    # -- requests ------------------------------------------------------------------------

    def synthesize(
        self,
        text: str,
        voice_name: str,
        cfg: SynthesisConfig,
        client_id: Hashable,
        *,
        style: str | None = None,
    ) -> SynthesisStream:
        """Queue one sentence and return its audio stream (call from the event loop).

        ``cfg`` goes on top of the server's and the voice's defaults.  Raises
        ``VoiceNotFoundError`` at once for an unknown voice; an unknown ``style`` falls back
        to the voice's main reference with a warning.
        """
        voice = self._registry.get(voice_name)
        if style is not None:
            try:
                voice = voice.with_style(style)
            except KeyError as err:
                _LOGGER.warning("%s; using the main reference", err.args[0])
        if self._thread is None:
            raise EngineClosedError()
        effective = voice.synthesis.merged(self._settings.synthesis).merged(cfg)
        job = _SynthJob(client_id, text, voice, effective, asyncio.get_running_loop())
        self._queue.put(job)
        return SynthesisStream(job, self.sample_rate)

    def cancel_client(self, client_id: Hashable) -> int:
        """Drop every queued and running job of ``client_id``; returns how many."""
        jobs = self._queue.remove_client(client_id)
        for job in jobs:
            job.abort(None)
        with self._lock:
            running = [job for job in self._running if job.client_id == client_id]
        for job in running:
            job.cancelled.set()
        return len(jobs) + len(running)

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        """Admit jobs up to ``capacity`` (fair queue order), then give each running
        sentence one chunk in turn, round-robin, until all are done; repeat.

        Sentences admitted together take their first turns before the running ones take
        their next: a batching backend then opens all their rows before its next step, and
        a burst of requests is prefilled as one batch rather than as whoever came first
        and then the rest a step later (64 at once on the H200, with the handler's batched
        writes: first audio p95 279 -> 180 ms, bench/README run 6)."""
        running: deque[_Running] = deque()
        while True:
            fresh: list[_Running] = []
            while len(running) + len(fresh) < self.capacity:
                job = self._queue.get(block=not (running or fresh))
                if job is None:
                    break
                self._track(job, True)
                if isinstance(job, _SynthJob):
                    started = self._begin(job)
                    if started is not None:
                        fresh.append(started)
                        continue
                else:
                    job.run(self)
                self._track(job, False)
            running.extendleft(reversed(fresh))
            if not running:
                if self._queue.closed:
                    return
                continue
            current = running.popleft()
            if self._step(current):
                running.append(current)
            else:
                self._track(current.job, False)

    def _track(self, job: _Job, started: bool) -> None:
        with self._lock:
            if started:
                self._running.add(job)
            else:
                self._running.discard(job)

    def _begin(self, job: _SynthJob) -> _Running | None:
        """Start a sentence; None when it is already done (cancelled, cached or failed)."""
        if job.cancelled.is_set():
            job.deliver(_END)
            return None
        try:
            key = None
            if self._cacheable(job.cfg):
                voice = job.voice
                key = PhraseKey(voice.name, voice.style, voice.mtime, job.text, job.cfg)
                cached = self.phrase_cache.get(key)
                if cached is not None:
                    job.deliver(cached)
                    job.deliver(_END)
                    return None
            prompt = self._prompts.get(job.voice, self._backend.prepare_prompt)
            chunks = iter(self._backend.synthesize(job.text, prompt, job.cfg))
        except Exception as err:  # reported to the handler, which turns it into an error event
            self._failed(job, err)
            return None
        return _Running(job, chunks, key)

    def _step(self, run: _Running) -> bool:
        """Deliver the sentence's next chunk; False once it is finished (or failed)."""
        job = run.job
        try:
            chunk = None if job.cancelled.is_set() else next(run.chunks, None)
        except Exception as err:
            run.close()
            self._failed(job, err)
            return False
        if chunk is None:
            run.close()
            if run.key is not None and run.pieces and not job.cancelled.is_set():
                self.phrase_cache.put(run.key, np.concatenate(run.pieces))
            job.deliver(_END)
            return False
        audio = np.asarray(chunk, dtype=np.float32).reshape(-1)  # (T,)
        if audio.size == 0:  # nothing yet (e.g. a decode queued to batch with others)
            return True
        job.deliver(audio)
        run.pieces.append(audio)
        return True

    @staticmethod
    def _failed(job: _SynthJob, err: Exception) -> None:
        _LOGGER.error("Synthesis of %r failed: %s", job.text[:40], err, exc_info=True)
        job.deliver(err)

    def _cacheable(self, cfg: SynthesisConfig) -> bool:
        if self.phrase_cache.max_entries == 0:
            return False
        return cfg.deterministic or self._settings.phrase_cache_nondeterministic
