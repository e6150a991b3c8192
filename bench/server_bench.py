"""Time to first audio as Home Assistant sees it: the real server, full-size models, GPU.

Run on a CUDA machine from the repository root (after ``script/setup --test`` has put the
HuBERT/BERT configs in ``tests/data/pretrained``)::

    PYTHONUNBUFFERED=1 python3 bench/server_bench.py

The five model files are built at full size with the weight contract's deterministic
``fill()`` (``tests/test_pipeline_golden.build_models``) and loaded through
``Pipeline.load``; random weights never emit EOS, so every fragment is capped at
``TOKENS`` tokens and each run does the same work. The voice is ``voices/austen``
(prepared once: a warm voice). A Wyoming client on loopback sends a 15-word sentence and
times ``synthesize`` sent → first ``audio-chunk`` received, and → ``audio-stop`` (RTF =
that time / audio seconds), ``RUNS`` times per configuration. Prints one table last.

Environment: ``BENCH_RUNS`` (default 20); ``BENCH_VARIANTS`` a comma-separated subset of
"eager", "graphs", "graphs + Triton", "graphs + Triton (no run-ahead)", "graphs + Triton
(cuDNN vocoder)", "graphs + Triton (one by one)", "graphs + Triton + compiled SoVITS";
``BENCH_CONCURRENT`` the concurrent rows as
"clients:kernels" or "clients:kernels:mode", or "none"; kernels "torch", "triton" or
"triton-sampler" (the PyTorch step with the Triton sampler). Each client says its own
sentence, a new one each round. Modes: "sync" (the batch without run-ahead), "ahead" (with it; the pipeline builds
several streams' batch without), "5ms" (the
interpreter's default GIL switch interval, not the batching engine's 0.5 ms), "same"
(every client the same sentence: the text frontend's cache serves all but the first),
"chunk4096" (audio-chunks of 4096 samples, not 1024), "sequential" (a request's next
sentence opened once the one before is done, not during its last decode), "inproc" (the clients in the
server's process, as before 2026-12-03's second session, not in ``CLIENT_PROCESSES`` processes
of their own), "wall" (where the worker thread
and the event loop spend the second round's wall time: sampled stacks), "1d" (the vocoder's 1-D
convolutions, not the product's channels-last 2-D ones), "cudnn" (the vocoder's residual
blocks through cuDNN, not the fused Triton convolutions), "serial" / "overlap" (the SoVITS
decodes on the GPT's CUDA stream / on their own, whatever the pipeline's streams), "py" (also print the second round's
Python profile: cProfile, which on Python 3.12+ sees the worker and the event loop alike),
"gpu" (how busy the GPU is over the second round: ``GpuTimeline``), "tok8" (8 GPT steps a
batch replay, not ``STREAM_CHUNK_TOKENS``; any count), "of64" (a pipeline batching 64
streams, whatever the clients), "whole" (every replay steps the whole batch, not the row
bucket of its live rows), "qwait" (each prefill first waits for all queued GPU work, timed
apart, as every concurrent row did until the third session of 2026-12-04), "ab" (then
``AB_PAIRS`` rounds each way of the GPT below the decodes against the product's GPT above
them, alternating on the same warm pipeline), "ablead" (the same with a request's later
sentences streamed in chunks from their 12th token, as before the fourth session of
2026-12-04, against the product's ``SENTENCE_LEAD``), "abprefill" (the same with the
prefills on the worker's stream below the decodes against the product's on the GPT's
stream above them), "abgc" (the same with the heap thawed, ``gc.unfreeze``, against the
product's frozen after warm-up). Modes combine with "+".
E.g. "4:triton,64:torch,64:triton-sampler:sync,64:triton:same,64:triton:gpu+tok8". ``BENCH_PROFILE`` "1" (the
4-client row) or the client counts whose rows also report the worker's time per kind of
work ("4,64").
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import dataclasses
import functools
import gc
import io
import itertools
import json
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from test_pipeline_golden import build_models  # noqa: E402
from wyoming.server import AsyncServer, AsyncTcpServer  # noqa: E402
from wyoming_clients import first_and_last, serve_clients, timed_client  # noqa: E402

import wyoming_sovits.batching as batching_module  # noqa: E402
import wyoming_sovits.pipeline as pipeline_module  # noqa: E402
from wyoming_sovits.batching import ContinuousBatcher  # noqa: E402
from wyoming_sovits.engine import Engine, freeze_heap  # noqa: E402
from wyoming_sovits.fast import SoVITSGraphs  # noqa: E402
from wyoming_sovits.handler import SovitsEventHandler  # noqa: E402
from wyoming_sovits.pipeline import Pipeline  # noqa: E402
from wyoming_sovits.settings import ServerSettings  # noqa: E402
from wyoming_sovits.voices import VoiceRegistry  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
TOKENS = 100  # per fragment (4 s of audio)
OVERLAP_DEFAULT = pipeline_module.OVERLAP_DECODES_MIN_STREAMS  # the product's
STREAM_CHUNK_TOKENS = pipeline_module.STREAM_CHUNK_TOKENS
CLIENT_PROCESSES = 4  # the concurrent rows' clients: 16 per process at 64 streams
AB_PAIRS = 3  # the "ab" mode's rounds each way, alternating
TEXT = "The washing machine has finished, so please take the laundry out before dinner tonight."
ROWS: list[tuple[str, str, str]] = []


def row(measure: str, value: str, note: str = "") -> None:
    ROWS.append((measure, value, note))
    print(f"{measure:<48} {value:>16}  {note}", flush=True)


def new_sentences(count: int) -> list[str]:
    """``count`` sentences of different lengths (new prompt shapes for the GPT each run)."""
    words = TEXT.rstrip(".").replace(",", "").split()
    return [" ".join((words * 3)[: 5 + i]) + "." for i in range(count)]


def distinct_sentences(count: int) -> list[str]:
    """``count`` different sentences about as long as ``TEXT`` (its words rotated, another
    time of day at the end), none of them ``TEXT``: the text frontend's cache never hits."""
    words = TEXT.rstrip(".").replace(",", "").split()[:-1]  # without "tonight"
    times = ["tonight", "today", "at six", "at seven", "this evening", "by noon", "soon",
             "at eight", "after lunch", "this morning", "at nine", "at five"]  # fmt: skip
    rotations = [words[k:] + words[:k] for k in range(len(words))]
    out = [  # two fragments, as TEXT: the cut at its comma
        (" ".join(w[:4]) + ", " + " ".join([*w[4:], when])).capitalize() + "."
        for when in times
        for w in rotations
    ][1:]
    if count > len(out):
        raise ValueError(f"at most {len(out)} distinct sentences")
    return out[:count]


@contextlib.asynccontextmanager
async def _serving(
    engine: Engine, registry: VoiceRegistry, settings: ServerSettings
) -> AsyncIterator[int]:
    """The real server and handler around ``engine`` on a free loopback port."""
    server = AsyncServer.from_uri("tcp://127.0.0.1:0")
    assert isinstance(server, AsyncTcpServer)
    handler = functools.partial(
        SovitsEventHandler, engine=engine, registry=registry, settings=settings
    )
    await server.start(handler)
    assert isinstance(server._server, asyncio.Server)
    try:
        yield server._server.sockets[0].getsockname()[1]
    finally:
        await server.stop()


async def _serve_and_measure(
    engine: Engine,
    registry: VoiceRegistry,
    settings: ServerSettings,
    streaming_flow: bool,
    runs: int,
    texts: list[str] | None = None,
) -> list[tuple[float, float, int]]:
    async with _serving(engine, registry, settings) as port:
        await first_and_last(port, streaming_flow, TEXT)  # warm-up (graphs for these lengths)
        chosen = texts or [TEXT] * runs
        return [await first_and_last(port, streaming_flow, text) for text in chosen]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    label: str,
    pipeline: Pipeline,
    registry: VoiceRegistry,
    settings: ServerSettings,
    *,
    partial_audio: bool,
    streaming_flow: bool,
    runs: int = RUNS,
    texts: list[str] | None = None,
) -> list[tuple[float, float, int]]:
    """Rows for one configuration (``texts``: one per run instead of ``TEXT`` each time);
    returns the raw (first, total, samples) per run."""
    pipeline.streaming = partial_audio
    engine = Engine(pipeline, registry, settings)
    engine.start()
    try:
        t0 = time.perf_counter()
        engine.warm_up(["austen"])
        warm = time.perf_counter() - t0
        timed = asyncio.run(
            _serve_and_measure(engine, registry, settings, streaming_flow, runs, texts)
        )
    finally:
        engine.close()
    firsts = [1e3 * f for f, _, _ in timed]
    rtf = statistics.median(total / (n / pipeline.sample_rate) for _, total, n in timed)
    audio_s = timed[0][2] / pipeline.sample_rate
    row(f"{label}: first audio p50", f"{statistics.median(firsts):.1f} ms",
        f"p95 {_percentile(firsts, 0.95):.1f} ms over {len(timed)} runs")  # fmt: skip
    row(
        f"{label}: whole-utterance RTF",
        f"{rtf:.4f}",
        f"{audio_s:.1f} s audio; warm-up {warm:.1f} s",
    )
    return timed


@contextlib.contextmanager
def batch_run_ahead(run_ahead: bool | None) -> Iterator[None]:
    """While in the block, pipelines build their batch with ``run_ahead`` forced to this
    value (None: as the pipeline asks). The batch is built on first use, so the block must
    cover the warm-up and the runs."""
    if run_ahead is not None:

        class Forced(ContinuousBatcher):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **{**kwargs, "run_ahead": run_ahead})

        pipeline_module.ContinuousBatcher = Forced  # type: ignore[misc]
    try:
        yield
    finally:
        pipeline_module.ContinuousBatcher = ContinuousBatcher  # type: ignore[misc]


async def _concurrent(
    engine: Engine,
    registry: VoiceRegistry,
    settings: ServerSettings,
    clients: int,
    python_profile: cProfile.Profile | WallSampler | GpuTimeline | None = None,
    same_text: bool = False,
    client_processes: int = CLIENT_PROCESSES,
    ab: Callable[[int], None] | None = None,
    ab_results: dict[int, list[tuple[float, float, float, float, float]]] | None = None,
    ab_ways: int = 2,
) -> tuple[list[tuple[float, float, int]], float, float, float]:
    """``clients`` simultaneous connections, each one sentence, twice (the first round also
    captures the batched graphs it needs): the second round's timings and wall, the first
    round's first-audio p95, and when the second round began (``time.perf_counter``).
    Each client says its own sentence, new in each round, unless ``same_text`` (then all
    say ``TEXT``, and its phones come from the cache). The clients run in
    ``client_processes`` processes of their own (``wyoming_clients.serve_clients``), as
    Home Assistant does; 0: in this process, where they parse every audio-chunk under the
    server's GIL. ``python_profile`` runs during the second round (every thread's Python,
    on 3.12+). ``ab``: then ``AB_PAIRS`` more rounds of the second round's sentences each
    of ``ab_ways`` ways, ``ab(0)``, ``ab(1)``, ... before each (which also empties the text cache:
    every round computes its text), their (aggregate x real time, first audio p50, p95 ms) into
    ``ab_results[way]``."""
    texts = [TEXT] * 2 * clients if same_text else distinct_sentences(2 * clients)
    async with _serving(engine, registry, settings) as port:
        await first_and_last(port, False, TEXT)  # warm-up
        first_round = 0.0
        for round_ in range(2):
            said = texts[round_ * clients : (round_ + 1) * clients]
            if round_ == 1 and python_profile is not None:
                python_profile.enable()
            if client_processes:
                timed = await serve_clients(port, said, client_processes)
            else:
                timed = await asyncio.gather(*(timed_client(port, t) for t in said))
            if round_ == 0:
                first_round = _percentile([1e3 * f for _, f, _, _ in timed], 0.95)
        if python_profile is not None:
            python_profile.disable()
        for _ in range(AB_PAIRS if ab is not None else 0):
            for way in range(ab_ways):
                assert ab is not None and ab_results is not None
                ab(way)
                with collector_time() as collected:
                    got = await serve_clients(port, said, client_processes or CLIENT_PROCESSES)
                t0 = min(t[0] for t in got)
                span = max(t[0] + t[2] for t in got) - t0
                firsts = [1e3 * t[1] for t in got]
                audio = sum(t[3] for t in got) / engine.sample_rate
                ab_results.setdefault(way, []).append(
                    (audio / span, statistics.median(firsts), _percentile(firsts, 0.95),
                     1e3 * sum(t1 - t0 for _, t0, t1, _ in collected),
                     1e3 * max((t1 - t0 for _, t0, t1, _ in collected), default=0.0))
                )  # fmt: skip
        start = min(t[0] for t in timed)
        wall = max(t[0] + t[2] for t in timed) - start
        return [(f, total, int(n)) for _, f, total, n in timed], wall, first_round, start


@contextlib.contextmanager
def collector_time() -> Iterator[list[tuple[int, float, float, int]]]:
    """Each garbage collection while the block ran (any thread's): its generation, start
    and end (``time.perf_counter``) and how many objects it freed."""
    spans: list[tuple[int, float, float, int]] = []
    began: list[float] = []

    def collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began.append(time.perf_counter())
        elif began:
            spans.append((info["generation"], began.pop(), time.perf_counter(), info["collected"]))

    gc.callbacks.append(collection)
    try:
        yield spans
    finally:
        gc.callbacks.remove(collection)


class WallSampler:
    """Where the worker thread and the event loop spend wall time: every ``interval`` s a
    sampling thread reads both threads' Python stacks (``sys._current_frames``), between
    ``enable`` and ``disable`` (the protocol ``_concurrent`` drives a cProfile with). A
    thread waiting on the GPU shows as the Python line that called the wait. The sampler
    needs the GIL, which it gets soonest when the sampled thread releases it: lines that do
    (CUDA waits and queries, ``np.clip``) are over-sampled against pure Python, and the
    sampling slows the round."""

    def __init__(self, interval: float = 0.0005) -> None:
        self.interval = interval
        self.samples: dict[str, list[tuple[str, ...]]] = {"worker": [], "event loop": []}
        self._loop_thread = threading.get_ident()  # the thread running asyncio.run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def enable(self) -> None:
        workers = [t.ident for t in threading.enumerate() if t.name == "sovits-engine"]
        ids = {"worker": workers[0] if workers else None, "event loop": self._loop_thread}
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, args=(ids,), daemon=True)
        self._thread.start()

    def disable(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self, ids: dict[str, int | None]) -> None:
        while not self._stop.wait(self.interval):
            frames = sys._current_frames()
            for name, ident in ids.items():
                frame = frames.get(ident) if ident is not None else None
                stack: list[str] = []
                while frame is not None:
                    code = frame.f_code
                    where = Path(code.co_filename)
                    stack.append(
                        f"{where.parent.name}/{where.name}:{code.co_name}:{frame.f_lineno}"
                    )
                    frame = frame.f_back
                self.samples[name].append(tuple(stack))
            del frames

    def report(self, label: str, top: int = 14) -> None:
        """Per thread: the innermost lines with the most samples, and the package's
        functions by share of samples anywhere on the stack (wall time inside them)."""
        for name, stacks in self.samples.items():
            if not stacks:
                continue
            n = len(stacks)
            leaves: dict[str, int] = {}
            inside: dict[str, int] = {}
            for stack in stacks:
                if stack:
                    leaves[stack[0]] = leaves.get(stack[0], 0) + 1
                funcs = {f.rsplit(":", 1)[0] for f in stack if f.startswith("wyoming_sovits/")}
                for func in funcs:
                    inside[func] = inside.get(func, 0) + 1
            for kind, counts in (("line", leaves), ("inside", inside)):
                ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
                note = "; ".join(f"{where} {100 * c / n:.1f}%" for where, c in ranked)
                row(f"{label}: {name} wall by {kind}", f"{n} samples", note)


class GpuTimeline:
    """How busy the GPU is over the profiled round: torch.profiler with CUDA activity only
    (no host operators recorded, so the round is barely slowed), its trace's kernels,
    copies and fills merged per CUDA stream and over all of them, and the idle gaps of the
    whole GPU. Same ``enable``/``disable`` protocol as cProfile."""

    def __init__(self) -> None:
        self.prof: torch.profiler.profile | None = None
        self.spans: list[tuple[float, float, int, str]] = []  # (start us, end us, stream, name)

    def enable(self) -> None:
        self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
        self.prof.start()

    def disable(self) -> None:
        if self.prof is None:
            return
        self.prof.stop()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trace.json"
            self.prof.export_chrome_trace(str(path))
            trace = json.loads(path.read_text())
        for ev in trace.get("traceEvents", []):
            if ev.get("ph") == "X" and ev.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
                t0 = float(ev["ts"])
                stream = int(ev.get("args", {}).get("stream", -1))
                self.spans.append((t0, t0 + float(ev.get("dur", 0.0)), stream, ev["name"]))
        self.prof = None

    @staticmethod
    def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
        merged: list[tuple[float, float]] = []
        for t0, t1 in sorted(spans):
            if merged and t0 <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], t1))
            else:
                merged.append((t0, t1))
        return merged

    def report(self, label: str) -> None:
        """Rows: the span from the round's first GPU work to its last, the GPU busy share
        of it, each stream's busy time and top kernels, the time two or more streams ran
        at once, and the idle gaps by size."""
        if not self.spans:
            row(f"{label}: GPU timeline", "no kernels recorded")
            return
        start = min(s[0] for s in self.spans)
        end = max(s[1] for s in self.spans)
        span = end - start
        union = self._union([(a, b) for a, b, _, _ in self.spans])
        busy = sum(b - a for a, b in union)
        per_stream: dict[int, list[tuple[float, float, int, str]]] = {}
        for s in self.spans:
            per_stream.setdefault(s[2], []).append(s)
        stream_busy = 0.0
        for stream, spans in sorted(per_stream.items(), key=lambda kv: -len(kv[1])):
            own = sum(b - a for a, b in self._union([(a, b) for a, b, _, _ in spans]))
            stream_busy += own
            names: dict[str, float] = {}
            for a, b, _, name in spans:
                names[name[:40]] = names.get(name[:40], 0.0) + b - a
            top = sorted(names.items(), key=lambda kv: -kv[1])[:4]
            note = "; ".join(f"{n} {t / 1e3:.0f} ms" for n, t in top)
            row(f"{label}: GPU stream {stream}", f"{own / 1e3:.0f} ms busy",
                f"{len(spans)} kernels; {note}")  # fmt: skip
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(union)]
        parts = []
        for lo, hi, name in (
            (20, 100, "20-100 us"),
            (100, 1000, "0.1-1 ms"),
            (1000, math.inf, ">= 1 ms"),
        ):
            sized = [x for x in gaps if lo <= x < hi]
            parts.append(f"{name}: {len(sized)} = {sum(sized) / 1e3:.0f} ms")
        note = "; ".join(parts)
        row(f"{label}: GPU busy", f"{100 * busy / span:.0f}% of {span / 1e3:.0f} ms",
            f"idle {(span - busy) / 1e3:.0f} ms in gaps {note}; streams concurrent "
            f"{(stream_busy - busy) / 1e3:.0f} ms")  # fmt: skip


def report_python_profile(python_profile: cProfile.Profile, top: int = 45) -> None:
    """The profiled round's functions by own time, then the package's by time inside."""
    for order, restrict in (("tottime", ""), ("cumulative", "wyoming_sovits/")):
        text = io.StringIO()
        stats = pstats.Stats(python_profile, stream=text).sort_stats(order)
        stats.print_stats(restrict, top)  # a regular expression over the file and name
        print(text.getvalue(), flush=True)


@contextlib.contextmanager
def timeline(pipeline: Pipeline) -> Iterator[list[tuple[str, float, float, int]]]:
    """Events of a concurrent row as (kind, start, end, count), perf_counter seconds:
    each request reaching the engine (event loop), admitted by the worker, its
    text features done, each prefill group (rows; within it, the packing of its inputs and
    the writing of its rows' state), each flush of queued SoVITS decodes (requests) and
    each stream's first chunk handed to the event loop."""
    from wyoming_sovits import engine as engine_module

    events: list[tuple[str, float, float, int]] = []
    patched: list[tuple[object, str, object, bool]] = []

    def wrap(owner: object, name: str, kind: str, count: Callable[..., int] | None) -> None:
        original = getattr(owner, name)
        own = not isinstance(owner, type) and name in vars(owner)  # an instance's wrapper

        @functools.wraps(original)
        def timed(*args: object, **kwargs: object) -> object:
            n = 1 if count is None else count(*args)  # before the call empties a queue
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                events.append((kind, t0, time.perf_counter(), n))

        patched.append((owner, name, original, own))
        setattr(owner, name, timed)

    wrap(Engine, "synthesize", "request reaches the engine", None)
    wrap(Engine, "_begin", "admitted by the worker", None)
    # on the instance, over ``stage_timers``' wrappers (enter this one after it)
    wrap(pipeline, "_sentence_features", "text + BERT", None)
    wrap(pipeline, "_flush_decodes", "decode flush", lambda: len(pipeline._pending_decodes))
    wrap(ContinuousBatcher, "_prefill_group", "prefill group", lambda _self, group: len(group))
    wrap(batching_module, "pack_inputs", "prefill packing", lambda items, *_a: len(items))
    wrap(ContinuousBatcher, "_admit", "prefill rows' state", lambda _self, group, *_a: len(group))
    wrap(ContinuousBatcher, "_capture", "GPT graph capture", None)
    wrap(SoVITSGraphs, "_capture", "SoVITS graph capture", None)
    wrap(SoVITSGraphs, "_captured", "SoVITS graph capture", None)
    deliver = engine_module._SynthJob.deliver
    seen: set[int] = set()

    def first_chunk(job: Any, item: object) -> None:
        if isinstance(item, np.ndarray) and id(job) not in seen:
            seen.add(id(job))
            now = time.perf_counter()
            events.append(("first chunk handed over", now, now, 1))
        deliver(job, item)

    engine_module._SynthJob.deliver = first_chunk  # type: ignore[method-assign,assignment]
    try:
        with collector_time() as collected:
            yield events
    finally:
        events += [(f"Python GC gen {g}", t0, t1, n) for g, t0, t1, n in collected]
        engine_module._SynthJob.deliver = deliver  # type: ignore[method-assign]
        for owner, name, original, own in reversed(patched):
            if own or isinstance(owner, type):
                setattr(owner, name, original)  # the method, or the wrapper beneath
            else:
                delattr(owner, name)


def report_timeline(label: str, events: list[tuple[str, float, float, int]], start: float,
                    firsts: list[float], wall: float) -> None:  # fmt: skip
    """Rows for the second round of ``timeline``'s events: per kind, how many and when
    (ms after the round began: first, median, last); each prefill group and decode flush
    as start+duration (count); the clients' first audio."""
    kinds: dict[str, list[tuple[float, float, int]]] = {}
    for kind, t0, t1, n in events:
        if start <= t0 <= start + wall:  # the second round's (not the A/B rounds after it)
            kinds.setdefault(kind, []).append((1e3 * (t0 - start), 1e3 * (t1 - t0), n))
    for kind, got in kinds.items():
        at = sorted(t for t, _, _ in got)
        note = f"first {at[0]:.0f}, median {statistics.median(at):.0f}, last {at[-1]:.0f} ms"
        if kind.startswith("Python GC"):  # how long the worker and event loop stood still
            spans = [d for _, d, _ in got]
            note = f"{sum(spans):.0f} ms in all, longest {max(spans):.1f} ms; {note}"
        if kind in (
            "prefill group",
            "prefill packing",
            "prefill rows' state",
            "decode flush",
            "GPT graph capture",
            "SoVITS graph capture",
            "Python GC gen 2",
        ):
            note = "; ".join(f"{t:.0f}+{d:.0f} ({n})" for t, d, n in got[:14])
        row(f"{label}: round 2 {kind}", f"{len(got)}", note)
    at = sorted(firsts)
    row(f"{label}: round 2 first audio received", f"{len(at)}",
        f"first {at[0]:.0f}, median {statistics.median(at):.0f}, last {at[-1]:.0f} ms")  # fmt: skip


@contextlib.contextmanager
def stage_timers(pipeline: Pipeline, queue_wait: bool = False) -> Iterator[dict[str, list[float]]]:
    """Host wall time of each worker stage while the block runs (profile evidence for the
    concurrent rows): text features, prefills, batch steps, SoVITS decodes. Each stage but the
    prefill ends in a device sync, so its wall time is its GPU time. ``queue_wait``: each
    prefill first waits for all queued GPU work (timed apart): what a prefill costs alone,
    but the wait also holds the worker behind the decodes in flight (until the third
    session of 2026-12-04 the concurrent rows always ran so, ~40 ms a round at 64 streams)."""
    spent: dict[str, list[float]] = {}
    patched: list[tuple[object, str, object]] = []

    def wrap(owner: object, name: str, stage: str, sync_first: bool = False) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: object, **kwargs: object) -> object:
            if sync_first and torch.cuda.is_available():  # queued GPU work vs the stage
                t_wait = time.perf_counter()
                torch.cuda.synchronize()
                spent.setdefault(f"GPU queue before {stage}", []).append(
                    time.perf_counter() - t_wait
                )
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent.setdefault(stage, []).append(time.perf_counter() - t0)

        patched.append((owner, name, original))
        setattr(owner, name, timed)

    wrap(pipeline, "_sentence_features", "text + BERT")
    wrap(pipeline, "_decode", "SoVITS decode")
    wrap(pipeline, "_decode_rows", "SoVITS batched decode")
    wrap(ContinuousBatcher, "_prefill_group", "prefill (rows opened together)", queue_wait)
    wrap(ContinuousBatcher, "advance", "batch step (4 tokens, all rows)")
    try:
        yield spent
    finally:
        for owner, name, original in reversed(patched):
            if isinstance(owner, type):
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def measure_concurrent(
    models: Path,
    work: Path,
    device: str,
    dtype: str,
    clients: int,
    *,
    kernels: str = "torch",
    tokens: int = TOKENS,
    profile: bool = False,
    python_profile: str = "",
    run_ahead: bool | None = None,
    switch_interval: float | None = None,
    samples_per_chunk: int | None = None,
    same_text: bool = False,
    one_d_vocoder: bool = False,
    fused_vocoder: bool = True,
    overlap: bool | None = None,
    client_processes: int = CLIENT_PROCESSES,
    open_ahead: bool = True,
    chunk_tokens: int = 0,
    max_streams: int = 0,
    row_buckets: bool = True,
    queue_wait: bool = False,
    ab: str = "",
) -> None:
    """``clients`` streams at once through a pipeline batching that many GPT rows;
    ``profile``: also print the top operators by host time (torch.profiler);
    ``run_ahead`` False: the batch reads each replay before queueing the next, True: it
    queues the next first (None: as the pipeline builds it, which with several streams is
    False);
    ``python_profile`` "py": print the second round's Python profile (cProfile, all
    threads); "wall": where the worker and the event loop spend its wall time
    (``WallSampler``);
    ``kernels`` "triton-sampler": the PyTorch step with the Triton sampler (what the
    product ran above 32 rows before the row-blocked GEMVs); ``switch_interval``: the
    interpreter's switch interval while the clients run (None: the engine's);
    ``one_d_vocoder``: the vocoder as loaded (1-D convolutions), not channels-last;
    ``fused_vocoder`` False: its residual blocks through cuDNN (``SOVITS_FUSED_RESBLOCKS``);
    ``overlap``: the SoVITS decodes on a CUDA stream of their own (True) or on the GPT's
    (False) whatever the streams (None: as the product, by ``OVERLAP_DECODES_MIN_STREAMS``);
    ``client_processes``: the processes the clients run in (0: this one, see
    ``_concurrent``); ``open_ahead`` False: each sentence opened after the one before is
    done (``OPEN_NEXT_SENTENCE_AHEAD`` off); ``chunk_tokens``: GPT steps per batch replay
    (``STREAM_CHUNK_TOKENS``; 0: the product's); ``max_streams``: the rows the pipeline
    batches (0: ``clients``); ``row_buckets`` False: every replay steps the whole batch
    (``batching.ROW_BUCKET_BASE`` 1), as before replays of few rows stepped only those;
    ``queue_wait``: each prefill first waits for the GPU's queue (``stage_timers``); ``ab``
    (a key of ``AB_SWITCHES``): then ``AB_PAIRS`` rounds each way of the product without
    one of its choices (``ab``: the GPT below the decodes, its replays on the caller's
    stream, none queued before a decode, ``GPT_ABOVE_DECODES`` off; ``ablead``: later
    sentences' first decode at ``STREAM_FIRST_TOKENS``, ``SENTENCE_LEAD`` 0; ``abprefill``:
    the prefills below the decodes; ``abgc``: the heap thawed) against the product,
    alternating on the same warm pipeline."""
    min_streams = {None: OVERLAP_DEFAULT, True: 1, False: 1 << 30}[overlap]
    with (
        batch_run_ahead(run_ahead),
        torch_step(kernels == "triton-sampler"),
        pipeline_constant("SOVITS_CHANNELS_LAST", not one_d_vocoder),
        pipeline_constant("SOVITS_FUSED_RESBLOCKS", fused_vocoder),
        pipeline_constant("OVERLAP_DECODES_MIN_STREAMS", min_streams),
        pipeline_constant("OPEN_NEXT_SENTENCE_AHEAD", open_ahead),
        pipeline_constant("STREAM_CHUNK_TOKENS", chunk_tokens or STREAM_CHUNK_TOKENS),
        pipeline_constant("ROW_BUCKET_BASE", None if row_buckets else 1, batching_module),
    ):
        _measure_concurrent(models, work, device, dtype, clients, kernels, tokens, profile,
                            python_profile, run_ahead, switch_interval, samples_per_chunk,
                            same_text, client_processes, max_streams or clients, queue_wait,
                            ab)  # fmt: skip


@contextlib.contextmanager
def pipeline_constant(name: str, value: object, module: Any = pipeline_module) -> Iterator[None]:
    """Pipelines built meanwhile see ``wyoming_sovits.pipeline``'s (or ``module``'s)
    constant ``name`` (a product choice: ``SOVITS_CHANNELS_LAST``,
    ``OVERLAP_DECODES_MIN_STREAMS``) set to ``value`` (None: left as it is)."""
    saved = getattr(module, name)
    if value is not None:
        setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


@contextlib.contextmanager
def torch_step(on: bool) -> Iterator[None]:
    """While on, batches pair the PyTorch decode step with the Triton sampler."""
    original = Pipeline._batch_step
    if on:

        def sampler_only(self: Pipeline, model: Any) -> tuple[None, Any]:
            return None, original(self, model)[1]

        Pipeline._batch_step = sampler_only  # type: ignore[method-assign]
    try:
        yield
    finally:
        Pipeline._batch_step = original  # type: ignore[method-assign]


def _measure_concurrent(
    models: Path,
    work: Path,
    device: str,
    dtype: str,
    clients: int,
    kernels: str,
    tokens: int,
    profile: bool,
    python_profile: str,
    run_ahead: bool | None,
    switch_interval: float | None,
    samples_per_chunk: int | None,
    same_text: bool,
    client_processes: int,
    max_streams: int,
    queue_wait: bool,
    ab: str,
) -> None:
    settings = _settings(work, device, dtype)
    if samples_per_chunk is not None:  # fewer, larger audio-chunk events
        settings = dataclasses.replace(settings, samples_per_chunk=samples_per_chunk)
    registry = VoiceRegistry(work / "voices")
    pipeline = Pipeline.load(models, device, dtype, cache_dir=work / "cache", fast=True,
                             gpt_kernels=kernels.removesuffix("-sampler"), max_streams=max_streams)  # fmt: skip
    pipeline.max_new_tokens = tokens
    engine = Engine(pipeline, registry, settings)
    engine.start()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)  # the engine restores its own at close
    try:
        engine.warm_up(["austen"])
        profiler = (
            torch.profiler.profile(
                activities=[
                    torch.profiler.ProfilerActivity.CPU,
                    torch.profiler.ProfilerActivity.CUDA,
                ]
            )
            if profile
            else contextlib.nullcontext()
        )
        py_prof: cProfile.Profile | WallSampler | GpuTimeline | None = None
        if python_profile:
            kind = {"py": cProfile.Profile, "wall": WallSampler, "gpu": GpuTimeline}
            py_prof = kind[python_profile]()
        ab_results: dict[int, list[tuple[float, float, float, float, float]]] = {}
        with (
            stage_timers(pipeline, queue_wait) as spent,
            profiler as prof,
            timeline(pipeline) as events,
        ):
            timed, wall, first_round, start = asyncio.run(
                _concurrent(
                    engine, registry, settings, clients, py_prof, same_text, client_processes,
                    AB_SWITCHES[ab][0](pipeline) if ab else None, ab_results,
                    len(AB_SWITCHES[ab][1]) if ab else 2,
                )
            )  # fmt: skip
        if isinstance(py_prof, cProfile.Profile):
            report_python_profile(py_prof)
        if prof is not None:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    finally:
        engine.close()
    rate = pipeline.sample_rate
    firsts = [1e3 * f for f, _, _ in timed]
    speed = [(n / rate) / total for _, total, n in timed]  # x real time, per stream
    ahead = {None: "", False: ", no run-ahead", True: ", run-ahead"}[run_ahead]
    label = f"{clients} streams batched ({kernels}{ahead}"
    label += f", batch of {max_streams}" if max_streams != clients else ""
    label += ")" if switch_interval is None else f", GIL switch {1e3 * switch_interval:g} ms)"
    label += {"py": " [Python profiled]", "wall": " [wall sampled]", "gpu": " [GPU timeline]"}.get(
        python_profile, ""
    )
    steps = pipeline_module.STREAM_CHUNK_TOKENS
    label += f" [{steps} tokens a replay]" if steps != STREAM_CHUNK_TOKENS else ""
    label += f" [{samples_per_chunk} samples per chunk]" if samples_per_chunk else ""
    label += " [one text for all]" if same_text else ""
    label += " [clients in-process]" if not client_processes else ""
    label += (
        " [sentences one after another]" if not pipeline_module.OPEN_NEXT_SENTENCE_AHEAD else ""
    )
    label += " [1-D vocoder]" if not pipeline_module.SOVITS_CHANNELS_LAST else ""
    label += " [cuDNN vocoder]" if not pipeline_module.SOVITS_FUSED_RESBLOCKS else ""
    label += " [whole-batch replays]" if batching_module.ROW_BUCKET_BASE <= 1 else ""
    overlap = pipeline._decode_stream is not None
    if overlap != (clients >= OVERLAP_DEFAULT):
        label += " [decodes overlapped]" if overlap else " [decodes not overlapped]"
    row(f"{label}: first audio p50", f"{statistics.median(firsts):.1f} ms",
        f"p95 {_percentile(firsts, 0.95):.1f} ms; first round p95 {first_round:.0f} ms")  # fmt: skip
    row(f"{label}: slowest stream", f"{min(speed):.1f}x real time",
        f"median {statistics.median(speed):.1f}x")  # fmt: skip
    row(f"{label}: aggregate", f"{sum(n for _, _, n in timed) / rate / wall:.0f}x real time",
        f"{wall:.2f} s wall")  # fmt: skip
    for stage, times in spent.items():  # both rounds
        row(f"{label}: worker in {stage}", f"{sum(times):.2f} s",
            f"{len(times)} calls, {1e3 * sum(times) / len(times):.1f} ms each")  # fmt: skip
    if events:
        report_timeline(label, events, start, firsts, wall)
    if isinstance(py_prof, WallSampler | GpuTimeline):
        py_prof.report(label)
    for way, runs in sorted(ab_results.items()):
        name = AB_SWITCHES[ab][1][way]
        aggregate = statistics.median(r[0] for r in runs)
        row(f"{label}: A/B {name}", f"{aggregate:.0f}x real time",
            "aggregate per round " + ", ".join(f"{r[0]:.0f}x" for r in runs)
            + "; first audio p50/p95 " + ", ".join(f"{r[1]:.0f}/{r[2]:.0f}" for r in runs)
            + " ms; GC ms (longest) " + ", ".join(f"{r[3]:.0f} ({r[4]:.0f})" for r in runs))  # fmt: skip


def gpt_above_decodes(pipeline: Pipeline) -> Callable[[int], None]:
    """Switches the warm ``pipeline`` between the GPT's replays above the decodes
    (``GPT_ABOVE_DECODES``: their own stream of higher priority, one queued before each
    decode launch) and below (the caller's stream, none queued first), emptying its text
    cache each time; the batches keep their graphs."""
    streams = {id(b): b._replay_stream for b in pipeline._batchers.values()}

    def switch(on: int) -> None:
        pipeline_module.GPT_ABOVE_DECODES = bool(on)
        for batcher in pipeline._batchers.values():
            batcher._replay_stream = streams.get(id(batcher)) if on else None
        pipeline._text_cache.clear()

    return switch


def sentence_lead(pipeline: Pipeline) -> Callable[[int], None]:
    """Switches ``SENTENCE_LEAD`` between the product's (later sentences decoded from
    ``first_decode_at``) and 0 (every sentence's first decode at ``STREAM_FIRST_TOKENS``),
    emptying ``pipeline``'s text cache each time."""
    product = pipeline_module.SENTENCE_LEAD

    def switch(on: int) -> None:
        pipeline_module.SENTENCE_LEAD = product if on else 0.0
        pipeline._text_cache.clear()

    return switch


def frozen_heap(pipeline: Pipeline) -> Callable[[int], None]:
    """Switches between the heap as warm-up left it frozen (``engine.freeze_heap``) and
    thawed (``gc.unfreeze``: every object in the collector's oldest generation, as before
    the fifth session of 2026-12-04), emptying ``pipeline``'s text cache each time."""

    def switch(on: int) -> None:
        if on:
            freeze_heap()
        else:
            gc.unfreeze()
        pipeline._text_cache.clear()

    return switch


def prefill_above_decodes(pipeline: Pipeline) -> Callable[[int], None]:
    """Switches ``pipeline``'s batches between prefills on the worker's stream, below the
    decodes (as before the fifth session of 2026-12-04), and on the GPT's replay stream
    above them (``prefill_on_replay_stream``), emptying its text cache each time."""

    def switch(on: int) -> None:
        for batcher in pipeline._batchers.values():
            batcher.prefill_on_replay_stream = bool(on)
        pipeline._text_cache.clear()

    return switch


# the "ab" modes: the switch of a warm pipeline, and each way's row name
AB_SWITCHES: dict[str, tuple[Callable[[Pipeline], Callable[[int], None]], list[str]]] = {
    "ab": (gpt_above_decodes, ["GPT below decodes (before)", "GPT above decodes (product)"]),
    "ablead": (sentence_lead, ["later sentences from token 12 (before)",
                               "later sentences' lead (product)"]),
    "abgc": (frozen_heap, ["heap not frozen (before)", "heap frozen after warm-up (product)"]),
    "abprefill": (prefill_above_decodes, ["prefills below decodes (before)",
                                          "prefills above decodes (product)"]),
}  # fmt: skip


def _settings(work: Path, device: str, dtype: str) -> ServerSettings:
    if not (work / "voices" / "austen").exists():
        shutil.copytree(ROOT / "voices" / "austen", work / "voices" / "austen")
    return ServerSettings(
        uri="tcp://127.0.0.1:0",
        data_dirs=(work,),
        voices_dir=work / "voices",
        device=device,
        dtype=dtype,
        default_voice="austen",
        phrase_cache_size=0,  # every run synthesises
    )


def run_variants(
    models: Path,
    work: Path,
    device: str,
    dtype: str,
    variants: list[tuple[str, bool, str]],
    *,
    tokens: int = TOKENS,
    runs: int = RUNS,
) -> None:
    """Every (name, fast, gpt_kernels) variant: streaming, the stream flow, no partial audio.
    A name ending in "(no run-ahead)" runs its batch without ``run_ahead``; one ending in
    "compiled SoVITS" compiles the SoVITS decode (``--sovits-compile``; its warm-up
    includes the compiling); one ending in "(cuDNN vocoder)" runs the vocoder's residual
    blocks through cuDNN (``SOVITS_FUSED_RESBLOCKS`` off); one ending in "(one by one)"
    decodes a request's sentences one after another (``SENTENCE_ROWS`` 1), not side by
    side."""
    for name, fast, kernels in variants:
        with (
            batch_run_ahead(False if name.endswith("(no run-ahead)") else None),
            pipeline_constant("SOVITS_FUSED_RESBLOCKS", not name.endswith("(cuDNN vocoder)")),
            pipeline_constant("SENTENCE_ROWS", 1 if name.endswith("(one by one)") else None),
        ):
            measure_variant(models, work, device, dtype, name, fast, kernels, tokens, runs)


def measure_variant(
    models: Path,
    work: Path,
    device: str,
    dtype: str,
    name: str,
    fast: bool,
    kernels: str,
    tokens: int,
    runs: int,
) -> None:
    """One variant of ``run_variants``."""
    settings = _settings(work, device, dtype)
    registry = VoiceRegistry(work / "voices")
    t0 = time.perf_counter()
    pipeline = Pipeline.load(models, device, dtype, cache_dir=work / "cache", fast=fast,
                             gpt_kernels=kernels,
                             sovits_compile=name.endswith("compiled SoVITS"))  # fmt: skip
    pipeline.max_new_tokens = tokens
    row(f"{name}: load", f"{time.perf_counter() - t0:.1f} s")
    for label, partial, flow in (
        ("streaming", True, False),
        ("synthesize-start/chunk/stop", True, True),
        ("no partial audio", False, False),
    ):
        measure(f"{name}, {label}", pipeline, registry, settings,
                partial_audio=partial, streaming_flow=flow, runs=runs)  # fmt: skip
    if fast:  # every sentence a new length: what a household's requests look like
        measure(f"{name}, streaming, a new sentence each run", pipeline, registry,
                settings, partial_audio=True, streaming_flow=False, runs=runs,
                texts=new_sentences(runs))  # fmt: skip
    del pipeline
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="server-bench-"))
    t0 = time.perf_counter()
    (work / "models").mkdir()
    models = build_models(work / "models")
    row("full-size fill() model files built", f"{time.perf_counter() - t0:.1f} s")
    variants = [
        ("eager", False, "torch"),
        ("graphs", True, "torch"),
        ("graphs + Triton", True, "triton"),
        ("graphs + Triton (no run-ahead)", True, "triton"),
        ("graphs + Triton (cuDNN vocoder)", True, "triton"),
        ("graphs + Triton (one by one)", True, "triton"),
        ("graphs + Triton + compiled SoVITS", True, "triton"),
    ]
    wanted = os.environ.get("BENCH_VARIANTS")  # e.g. "graphs,graphs + Triton"
    if wanted:
        variants = [v for v in variants if v[0] in wanted.split(",")]
    for variant in variants:
        try:
            run_variants(models, work, "cuda", "float16", [variant])
        except Exception as exc:  # one failing variant must not lose the others' rows
            traceback.print_exc()
            row(f"{variant[0]} FAILED", type(exc).__name__, str(exc)[:120])
    concurrent = [(4, "triton", ""), (16, "triton", ""), (64, "torch", ""), (64, "triton", "")]
    wanted_rows = os.environ.get("BENCH_CONCURRENT")  # e.g. "4:triton,64:triton:sync"
    if wanted_rows == "none":
        concurrent = []
    elif wanted_rows:
        fields = [[*c.split(":"), ""][:3] for c in wanted_rows.split(",")]
        concurrent = [(int(n), k, mode) for n, k, mode in fields]
    # BENCH_PROFILE: "1" profiles the 4-client row, or a list of client counts ("4,64")
    profiled = os.environ.get("BENCH_PROFILE", "")
    profile_for = {4} if profiled == "1" else {int(n) for n in profiled.split(",") if n}
    for clients, kernels, mode in concurrent:
        modes = set(mode.split("+"))  # flags, e.g. "gpu+tok8"
        profiler = next((m for m in ("py", "wall", "gpu") if m in modes), "")
        chunk = next((int(m[5:]) for m in modes if m.startswith("chunk")), None)
        tokens = next((int(m[3:]) for m in modes if m.startswith("tok")), 0)
        rows = next((int(m[2:]) for m in modes if m.startswith("of")), 0)
        try:
            measure_concurrent(models, work, "cuda", "float16", clients, kernels=kernels,
                               profile=clients in profile_for, python_profile=profiler,
                               run_ahead=True if "ahead" in modes else False if "sync" in modes else None,
                               samples_per_chunk=chunk,
                               same_text="same" in modes, one_d_vocoder="1d" in modes,
                               fused_vocoder="cudnn" not in modes,
                               client_processes=0 if "inproc" in modes else CLIENT_PROCESSES,
                               open_ahead="sequential" not in modes,
                               overlap=True if "overlap" in modes else False if "serial" in modes else None,
                               switch_interval=0.005 if "5ms" in modes else None,
                               chunk_tokens=tokens, max_streams=rows,
                               row_buckets="whole" not in modes,
                               queue_wait="qwait" in modes,
                               ab=next((m for m in modes if m in AB_SWITCHES), ""))  # fmt: skip
        except Exception as exc:
            traceback.print_exc()
            row(f"{clients} streams ({kernels}) FAILED", type(exc).__name__, str(exc)[:120])
    print(f"\n| {'measure':<48} | {'value':>16} | note |\n|---|---:|---|")
    for m, v, n in ROWS:
        print(f"| {m:<48} | {v:>16} | {n} |", flush=True)


if __name__ == "__main__":
    main()
