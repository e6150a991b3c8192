"""Continuous batching: sentences admitted at different times decode together, exactly.

Greedy decoding is deterministic, so every row of a batch must produce the very tokens it
produces alone, whatever its companions and whenever it joined: that checks per-row step
counters (EOS bar, cap), per-row cache slots, prefill into a live batch and row reuse. On
CPU the batcher runs its step eagerly (``use_graphs=False``), the step CUDA graphs replay.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scratch import scratch
from test_pipeline_fast import GREEDY, MAX_TOKENS, make_voice
from test_t2s import TINY, request, tiny_model
from tiny_frontends import make_tiny_models_dir

from wyoming_sovits.batching import BatchFullError, ContinuousBatcher, drain, row_buckets
from wyoming_sovits.engine import Engine
from wyoming_sovits.fast import CAPTURE_FRAMES, FastPathError, SoVITSGraphs
from wyoming_sovits.generate import SamplingError, SamplingParams, generate
from wyoming_sovits.models.t2s import T2SInput, Text2Semantic, pack_inputs
from wyoming_sovits.models.vits import SoVITS, VitsInputError, VocoderWindows
from wyoming_sovits.pipeline import (
    NoiseTape,
    Pipeline,
    decode_batch,
    decode_latents,
    vocode_windows,
)
from wyoming_sovits.prompt import Prompt
from wyoming_sovits.settings import ServerSettings, SettingsError, SynthesisConfig
from wyoming_sovits.voices import VoiceProfile, VoiceRegistry

GREEDY_PARAMS = SamplingParams(top_k=1)


def alone(model: Text2Semantic, item: T2SInput, cap: int) -> list[int]:
    out = generate(
        model, item.phone_ids, item.bert, item.prompt_tokens, top_k=1, max_new_tokens=cap
    )
    return out.tolist()


def batcher(model: Text2Semantic, rows: int = 3, run_ahead: bool = False) -> ContinuousBatcher:
    return ContinuousBatcher(model, rows, 128, max_new_tokens=40, steps_per_sync=4, kv_bucket=32,
                             use_graphs=False, run_ahead=run_ahead)  # fmt: skip


# run_ahead: the next replay is queued before the current one's tokens are handed out
RUN_AHEAD = pytest.mark.parametrize("run_ahead", [False, True], ids=["in step", "run ahead"])


def opened(b: ContinuousBatcher, item: T2SInput, cap: int) -> Iterator[torch.Tensor]:
    return drain(b.open(item, GREEDY_PARAMS, cap))


@RUN_AHEAD
def test_staggered_rows_match_single_runs(run_ahead: bool) -> None:
    model = tiny_model(1)
    items = [request(5 + 3 * i, 4 + 5 * i, seed=10 + i) for i in range(5)]
    caps = [30, 17, 40, 25, 12]
    want = [alone(model, item, cap) for item, cap in zip(items, caps, strict=True)]
    b = batcher(model, run_ahead=run_ahead)
    got: dict[int, list[int]] = {}
    streams: dict[int, Iterator[torch.Tensor]] = {0: opened(b, items[0], caps[0])}
    got[0] = next(streams[0]).tolist()  # row 0 runs ahead before the others join
    got[0] += next(streams[0]).tolist()
    pending = [1, 2, 3, 4]
    while streams or pending:
        while pending and b.live_rows < b.max_batch:
            i = pending.pop(0)
            streams[i], got[i] = opened(b, items[i], caps[i]), []
        for i, stream in list(streams.items()):  # round-robin, as the engine does
            chunk = next(stream, None)
            if chunk is None:
                del streams[i]
            else:
                got[i] += chunk.tolist()
    assert [got[i] for i in range(5)] == want
    assert b.live_rows == 0 and sorted(b._free) == [0, 1, 2]


def test_row_buckets() -> None:
    assert row_buckets(1) == (1,)
    assert row_buckets(2) == (1, 2)
    assert row_buckets(64) == (1, 4, 16, 64)
    assert row_buckets(40) == (1, 4, 16, 40)
    assert row_buckets(8, base=1) == (8,)
    with pytest.raises(FastPathError, match="ascend"):
        ContinuousBatcher(tiny_model(1), 4, 64, max_new_tokens=8, use_graphs=False,
                          buckets=(1, 2))  # fmt: skip


class _CountingStep:
    """The model's own step, noting how many rows each call steps."""

    def __init__(self, model: Text2Semantic) -> None:
        self.model, self.rows = model, list[int]()

    def __call__(
        self, tokens: torch.Tensor, pos: torch.Tensor, kv_len: int | None = None
    ) -> torch.Tensor:
        self.rows.append(int(tokens.shape[0]))
        return self.model(tokens, pos, kv_len=kv_len)


def test_a_replay_steps_only_the_rows_up_to_the_highest_live_one() -> None:
    """Rows go lowest first, and each replay steps the smallest row bucket holding the
    highest live row; the tokens are those of a batch that steps every row."""
    model = tiny_model(3)
    items = [request(5 + 2 * i, 4 + i, seed=20 + i) for i in range(6)]
    want = [alone(model, item, 20) for item in items]
    step = _CountingStep(model)
    b = ContinuousBatcher(model, 8, 128, max_new_tokens=40, steps_per_sync=4, kv_bucket=32,
                          forward=step, use_graphs=False)  # fmt: skip
    assert b.buckets == (1, 4, 8)
    first = opened(b, items[0], 20)
    assert [t for chunk in first for t in chunk.tolist()] == want[0]
    assert set(step.rows) == {1}  # one sentence in a batch of 8 steps one row
    step.rows.clear()
    streams = [opened(b, item, 20) for item in items[1:6]]  # rows 0 to 4
    got = [[t for chunk in stream for t in chunk.tolist()] for stream in streams]
    assert got == want[1:6]
    assert set(step.rows) <= {4, 8} and 8 in step.rows  # row 4 live: the whole 8
    s2 = b.open(items[0], GREEDY_PARAMS, 20)
    s3 = b.open(items[1], GREEDY_PARAMS, 20)
    assert (s2.row, s3.row) == (0, 1)  # given back rows are handed out lowest first
    s2.close()
    assert b.open(items[2], GREEDY_PARAMS, 20).row == 0


@RUN_AHEAD
def test_full_batch_and_early_close(run_ahead: bool) -> None:
    model = tiny_model(2)
    b = batcher(model, rows=2, run_ahead=run_ahead)
    first = b.open(request(6, 5, seed=1), GREEDY_PARAMS, 30)
    b.open(request(4, 3, seed=2), GREEDY_PARAMS, 30)
    with pytest.raises(BatchFullError, match="2 rows"):
        b.open(request(4, 3, seed=3), GREEDY_PARAMS, 30)
    next(first)
    # run ahead, the next replay is queued for both rows before the first is read
    assert (b._pending is not None) is run_ahead
    first.close()  # a cancelled sentence gives its row back at once
    item = request(7, 6, seed=4)
    # the row is reused at once; the queued replay's tokens for it are not the new row's
    again = list(opened(b, item, 20))
    assert torch.cat(again).tolist() == alone(model, item, 20)


class _SlowEvent:
    """Stands in for a CUDA event: incomplete for its first ``polls`` queries, complete
    once waited for."""

    def __init__(self, polls: int) -> None:
        self.polls, self.queries, self.waited = polls, 0, False

    def query(self) -> bool:
        self.queries += 1
        return self.waited or self.queries > self.polls

    def synchronize(self) -> None:
        self.waited = True


def test_pump_steps_the_rows_without_waiting() -> None:
    """``pump`` queues a replay and hands out a finished one's tokens, never waiting on
    the GPU: a replay still running is left queued; tokens are those of ``advance``."""
    model = tiny_model(3)
    items = [request(5, 4, seed=1), request(8, 6, seed=2)]
    want = [alone(model, item, 30) for item in items]
    b = batcher(model, rows=2)
    streams = [b.open(item, GREEDY_PARAMS, 30) for item in items]
    assert b.pump() and b._pending is not None  # queued, nothing handed out yet
    assert all(not s.buffer for s in streams)
    slow = _SlowEvent(polls=2)
    b._pending.done = slow  # type: ignore[assignment]
    queued = b._pending
    assert b.pump() and b.pump() and b._pending is queued  # still running: left queued
    assert all(not s.buffer for s in streams)
    assert b.pump() and b._pending is not queued  # finished: its tokens out, the next queued
    assert all(len(s.buffer) == 1 for s in streams)
    got = [torch.cat(list(drain(s))).tolist() for s in streams]  # advance collects the rest
    assert got == want
    assert not b.pump()  # no live row: nothing queued


@RUN_AHEAD
def test_one_row_prefill_padded_to_its_bucket(run_ahead: bool) -> None:
    """``prefill_bucket``: a one-row batch's prompt is left-padded to a multiple of the
    bucket (what its prefill graphs capture; here eagerly): the same greedy tokens, and
    the row holds the padded slots. A prompt whose padded length leaves no room for its
    tokens is prefilled at its own length."""
    model = tiny_model(3)
    b = ContinuousBatcher(model, 1, 64, max_new_tokens=40, kv_bucket=32, use_graphs=False,
                          run_ahead=run_ahead, prefill_bucket=16)  # fmt: skip
    for lx, ly, cap, slots in ((5, 4, 20, 16), (9, 12, 12, 32), (30, 20, 12, 50)):
        item = request(lx, ly, seed=lx)
        stream = b.open(item, GREEDY_PARAMS, cap)
        assert b._pos[0] == slots  # 16, 32: padded; 50 + 12 > 64 - 2: its own length
        got = [t for chunk in drain(stream) for t in chunk.tolist()]
        assert got == alone(model, item, cap)
    assert b.capture_prefills(range(3, 40)) == 0


def test_prefill_graphs_pad_to_the_bucket_and_check_their_input() -> None:
    from wyoming_sovits.fast import FastPathError, PrefillGraphs

    model = tiny_model(4)
    model.setup_caches(1, 64)
    graphs = PrefillGraphs(model, 16, use_graphs=False)
    item = request(6, 5, seed=2)
    packed = pack_inputs([item], TINY)
    with torch.no_grad():
        want = model.prefill(packed)
        want_keys = model.k_cache[:, 0, :, : packed.length].clone()
        logits, slots = graphs(packed)
    pad = slots - packed.length
    assert slots == 16 and pad > 0
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    # the real slots' keys moved right by the padding; the row starts after it
    torch.testing.assert_close(model.k_cache[:, 0, :, pad:slots], want_keys, rtol=1e-5, atol=1e-6)
    assert int(model.row_start[0]) == pad
    with pytest.raises(FastPathError, match="one request"):
        graphs(pack_inputs([item, item], TINY))
    with pytest.raises(FastPathError, match="bucket"):
        PrefillGraphs(model, 0, use_graphs=False)


def test_requests_beyond_the_rows_are_refused() -> None:
    b = batcher(tiny_model(3))
    with pytest.raises(Exception, match="slots"):
        b.open(request(100, 20, seed=1), GREEDY_PARAMS, 40)
    with pytest.raises(Exception, match="top_k"):
        b.open(request(5, 5, seed=1), SamplingParams(top_k=500), 10)


# -- the pipeline and the engine --------------------------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with scratch(tmp_path_factory, "models") as folder:
        yield make_tiny_models_dir(folder)


def load(models_dir: Path, streams: int) -> Pipeline:
    loaded = Pipeline.load(models_dir, "cpu", "float32", cache_dir=None, fast=True,
                           max_streams=streams)  # fmt: skip
    loaded.max_new_tokens = MAX_TOKENS
    return loaded


TEXTS = ("Good morning!", "The kettle is on.", "Dinner is ready.")


@pytest.fixture(scope="module")
def single(models_dir: Path) -> Pipeline:
    return load(models_dir, 1)


@pytest.fixture(scope="module")
def batched(models_dir: Path) -> Pipeline:
    return load(models_dir, 3)


def _interleave(
    pipeline: Pipeline, prompt: object, texts: tuple[str, ...] = TEXTS
) -> list[list[np.ndarray]]:
    streams = [iter(pipeline.synthesize(t, prompt, GREEDY, stream=True)) for t in texts]
    got: list[list[np.ndarray]] = [[] for _ in texts]
    live = list(range(len(texts)))
    while live:  # as the engine steps them: one chunk each in turn
        for i in list(live):
            chunk = next(streams[i], None)
            if chunk is None:
                live.remove(i)
            else:
                got[i].append(chunk)
    return got


def _slow_decodes(monkeypatch: pytest.MonkeyPatch, polls: int) -> list[_SlowEvent]:
    """Batched decodes whose audio stays "on its way" for ``polls`` queries."""
    events: list[_SlowEvent] = []
    decode_rows = Pipeline._decode_rows

    def in_flight(self: Pipeline, path: Path, batch: list) -> None:  # type: ignore[type-arg]
        decode_rows(self, path, batch)
        events.append(_SlowEvent(polls=polls))
        for queued in batch:
            queued.done = events[-1]

    monkeypatch.setattr(Pipeline, "_decode_rows", in_flight)
    return events


def _assert_near_alone(
    batched: Pipeline, got: list[list[np.ndarray]], want: list[np.ndarray]
) -> None:
    """Each stream's audio is its single-stream audio but for the batched decode's padding
    (within 5%), and nothing is left queued or holding a row."""
    for chunks, w in zip(got, want, strict=True):
        audio = np.concatenate(chunks)
        assert audio.shape == w.shape
        assert np.linalg.norm(audio - w) <= 0.05 * np.linalg.norm(w)
    assert batched._pending_decodes == []
    assert all(b.live_rows == 0 for b in batched._batchers.values())


def test_pipeline_batched_speaks_as_alone(single: Pipeline, batched: Pipeline) -> None:
    """Interleaved streams, fewer waiting at a decode than ``BATCH_DECODE_MIN_ROWS``: each
    replays its own decode and the audio is exactly the single-stream audio; "nothing
    yet" chunks are empty."""
    assert (single.max_concurrent, batched.max_concurrent) == (1, 3)
    prompt = single.prepare_prompt(make_voice())
    want = [np.concatenate(list(single.synthesize(t, prompt, GREEDY, stream=True))) for t in TEXTS]
    got = _interleave(batched, prompt)
    assert any(len(c) == 0 for chunks in got for c in chunks)
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(np.concatenate(got[i]), want[i], atol=1e-5)
    assert all(b.live_rows == 0 for b in batched._batchers.values())


class _Interleaving:
    """A backend whose sentences log each chunk, to see how the engine steps them."""

    sample_rate = 32000
    max_concurrent = 3

    def __init__(self) -> None:
        self.log: list[str] = []
        self.lock = threading.Lock()

    def prepare_prompt(self, voice: VoiceProfile) -> object:
        return voice.name

    def synthesize(self, text: str, prompt: object, cfg: SynthesisConfig) -> Iterator[np.ndarray]:
        for i in range(3):
            self.log.append(f"{text}{i}")
            yield np.full(100, 0.1, dtype=np.float32)


async def _collect(engine: Engine, text: str, client: int) -> int:
    stream = engine.synthesize(text, "austen", SynthesisConfig(), client)
    return sum([len(chunk) async for chunk in stream])


async def test_engine_steps_sentences_round_robin(tmp_path: Path) -> None:
    from fake_backend import write_voice

    write_voice(tmp_path, "austen")
    backend = _Interleaving()
    engine = Engine(backend, VoiceRegistry(tmp_path), ServerSettings(voices_dir=tmp_path))
    assert engine.capacity == 3
    engine.start()
    try:
        sizes = await asyncio.gather(*(_collect(engine, t, c) for c, t in enumerate("abc")))
    finally:
        engine.close()
    assert sizes == [300, 300, 300]
    # all three started before any finished: their chunks alternate
    assert backend.log.index("c0") < backend.log.index("a2")


class _Gated(_Interleaving):
    """``a`` waits inside its second chunk until the test has queued ``b`` and ``c``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def synthesize(self, text: str, prompt: object, cfg: SynthesisConfig) -> Iterator[np.ndarray]:
        for i in range(3):
            if text == "a" and i == 1:
                assert self.gate.wait(10)
            self.log.append(f"{text}{i}")
            yield np.full(100, 0.1, dtype=np.float32)


async def test_engine_gives_new_sentences_their_first_turn_first(tmp_path: Path) -> None:
    """Sentences admitted together start before the running one continues, so a batching
    backend opens all their rows before its next step."""
    from fake_backend import write_voice

    write_voice(tmp_path, "austen")
    backend = _Gated()
    engine = Engine(backend, VoiceRegistry(tmp_path), ServerSettings(voices_dir=tmp_path))
    engine.start()
    try:
        first = asyncio.ensure_future(_collect(engine, "a", 0))
        for _ in range(500):
            if backend.log:
                break
            await asyncio.sleep(0.01)
        others = [asyncio.ensure_future(_collect(engine, t, c)) for c, t in ((1, "b"), (2, "c"))]
        await asyncio.sleep(0.05)  # both queued while "a" waits in its second chunk
        backend.gate.set()
        sizes = await asyncio.gather(first, *others)
    finally:
        engine.close()
    assert sizes == [300, 300, 300]
    assert backend.log[:5] == ["a0", "a1", "b0", "c0", "a2"]


async def test_engine_with_batched_pipeline(
    single: Pipeline, batched: Pipeline, tmp_path: Path
) -> None:
    """Three clients at once through the engine: each gets the audio it gets alone."""
    from fake_backend import write_voice

    write_voice(tmp_path, "austen")
    voice = make_voice()
    prompt = single.prepare_prompt(voice)
    want = [sum(len(c) for c in single.synthesize(t, prompt, GREEDY)) for t in TEXTS]
    batched.prepare_prompt = lambda _voice: prompt  # type: ignore[method-assign]
    engine = Engine(batched, VoiceRegistry(tmp_path), ServerSettings(voices_dir=tmp_path))
    engine.start()
    try:

        async def one(text: str, client: int) -> int:
            stream = engine.synthesize(text, "austen", GREEDY, client)
            return sum([len(chunk) async for chunk in stream])

        got = await asyncio.gather(*(one(t, c) for c, t in enumerate(TEXTS)))
    finally:
        engine.close()
    assert list(got) == want


def test_abandoned_sentence_gives_its_row_back(batched: Pipeline) -> None:
    """A client that disconnects mid-sentence: the engine closes the generator, the row
    is free again at once (not at garbage collection)."""
    prompt = batched.prepare_prompt(make_voice())
    chunks = batched.synthesize("Good morning, everyone.", prompt, GREEDY, stream=True)
    next(chunks)
    (batch,) = batched._batchers.values()
    assert batch.live_rows == 1
    chunks.close()  # type: ignore[attr-defined]
    assert batch.live_rows == 0 and len(batch._free) == batch.max_batch


def test_top_k_beyond_the_batch_is_refused(batched: Pipeline) -> None:
    """No eager fallback with a batch: it would write into the live rows' cache."""
    prompt = batched.prepare_prompt(make_voice())
    with pytest.raises(SamplingError, match="top_k"):
        list(batched.synthesize("Hello.", prompt, SynthesisConfig(top_k=200)))


def test_max_streams_is_checked() -> None:
    with pytest.raises(SettingsError, match="max_streams"):
        ServerSettings(max_streams=0)
    with pytest.raises(ValueError, match="max_streams"):
        Pipeline.load(Path("/nonexistent"), "cpu", max_streams=0)


def test_batched_sovits_decode_matches_each_alone(single: Pipeline) -> None:
    """``decode_batch``: rows of different lengths give their own audio, to the end (the
    vocoder's masks hide the padding of the shorter rows)."""
    prompt = single.prepare_prompt(make_voice())
    sovits = single.sovits.model
    g = torch.Generator().manual_seed(0)
    rows, want = [], []
    for n, length in ((30, 12), (17, 20), (45, 7)):
        tokens = torch.randint(0, 1024, (n,), generator=g)
        phones = torch.randint(1, 60, (length,), generator=g)
        tape = NoiseTape(
            sovits.cfg.inter_channels, torch.Generator().manual_seed(n), torch.device("cpu")
        )
        want.append(decode_latents(sovits, tokens, phones, prompt.ge, 1.0, 0.5, tape)[2])
        rows.append((tokens, phones, prompt.ge, tape.take(2 * n), 0.5))
    got = decode_batch(sovits, rows)
    for w, a in zip(want, got, strict=True):
        assert a.shape == w.shape
        assert np.linalg.norm(w - a) <= 1e-5 * np.linalg.norm(w)


def test_streams_decode_together(
    single: Pipeline, batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams at a decode point in the same round share one SoVITS call."""
    import wyoming_sovits.pipeline as pipeline_module

    calls: list[int] = []
    real = pipeline_module.decode_batch

    def counting(sovits: object, rows: list, *args: object) -> list[np.ndarray]:  # type: ignore[type-arg]
        calls.append(len(rows))
        return real(sovits, rows, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "decode_batch", counting)
    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 2)
    prompt = single.prepare_prompt(make_voice())
    want = [np.concatenate(list(single.synthesize(t, prompt, GREEDY, stream=True))) for t in TEXTS]
    got = _interleave(batched, prompt)
    assert calls and max(calls) == 3  # the first decodes of all three streams: one call
    for chunks, w in zip(got, want, strict=True):
        audio = np.concatenate(chunks)
        assert audio.shape == w.shape
        assert np.linalg.norm(audio - w) <= 0.05 * np.linalg.norm(w)
    assert batched._pending_decodes == []


def test_streams_step_the_gpt_while_their_decodes_are_on_the_way(
    single: Pipeline, batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batched decode's audio that is still on its way from the GPU is not read: its
    stream yields empty chunks and steps the GPT batch meanwhile, or, no row being left
    to step, waits for it. The audio is the same."""
    import wyoming_sovits.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 2)
    events = _slow_decodes(monkeypatch, polls=3)
    pumps: list[bool] = []
    pump = ContinuousBatcher.pump

    def counted(self: ContinuousBatcher) -> bool:
        pumps.append(pump(self))
        return pumps[-1]

    monkeypatch.setattr(ContinuousBatcher, "pump", counted)
    prompt = single.prepare_prompt(make_voice())
    want = [np.concatenate(list(single.synthesize(t, prompt, GREEDY, stream=True))) for t in TEXTS]
    got = _interleave(batched, prompt)
    assert events and all(e.waited or e.queries > e.polls for e in events)
    assert True in pumps  # the batch stepped while decodes were in flight
    assert any(e.waited for e in events)  # the last streams' decodes: nothing else to step
    _assert_near_alone(batched, got, want)


LONG_TEXTS = ("Good morning! The kettle is on.", "Dinner is ready. Wash your hands!", "Hello.")


def test_next_sentence_opens_while_the_last_decode_is_on_its_way(
    single: Pipeline, batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several streams a request's next sentence is opened (features, row) once its
    sentence's last decode is on its way: its row is prefilled and stepped beside that
    decode. Each stream's audio is still its single-stream audio, sentence by sentence."""
    import wyoming_sovits.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 2)
    events = _slow_decodes(monkeypatch, polls=3)
    opened: list[bool] = []  # per sentence opened ahead: whether a decode was in flight then
    open_next = Pipeline._open_next

    def watched(self: Pipeline, *args: object) -> object:
        opened.append(any(not (e.waited or e.queries > e.polls) for e in events))
        return open_next(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Pipeline, "_open_next", watched)
    prompt = single.prepare_prompt(make_voice())
    want = [
        np.concatenate(list(single.synthesize(t, prompt, GREEDY, stream=True))) for t in LONG_TEXTS
    ]
    got = _interleave(batched, prompt, LONG_TEXTS)
    assert opened and all(opened)  # each while its sentence's last decode was in flight
    _assert_near_alone(batched, got, want)


def test_next_sentence_opened_ahead_gives_its_row_back_when_closed(
    batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream closed while its next sentence's row is open (the last decode of the
    sentence before still on its way) gives that row back too."""
    import wyoming_sovits.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 1)
    prompt = batched.prepare_prompt(make_voice())
    text = "Good morning! The kettle is on."
    first = np.concatenate(list(batched.synthesize("Good morning!", prompt, GREEDY, stream=True)))
    never = _SlowEvent(polls=1 << 30)
    decode_rows, decode_soon = Pipeline._decode_rows, Pipeline._decode_soon
    last: list[bool] = []  # per decode: whether it is its sentence's last (with ``meanwhile``)

    def marked(self: Pipeline, *args: object) -> object:
        last.append(len(args) > 6 and args[6] is not None)
        return (yield from decode_soon(self, *args))  # type: ignore[arg-type]

    def in_flight(self: Pipeline, path: Path, batch: list) -> None:  # type: ignore[type-arg]
        decode_rows(self, path, batch)
        for queued in batch:
            queued.done = never if last[-1] else None  # the first sentence's end never comes

    monkeypatch.setattr(Pipeline, "_decode_soon", marked)
    monkeypatch.setattr(Pipeline, "_decode_rows", in_flight)
    chunks = iter(batched.synthesize(text, prompt, GREEDY, stream=True))
    (batch,) = batched._batchers.values()
    heard = []
    for _, chunk in zip(range(400), chunks, strict=False):
        heard.append(chunk)
        if batch.live_rows and never.queries:  # the next sentence's row, opened ahead
            break
    assert never.queries and batch.live_rows == 1
    assert 0 < sum(map(len, heard)) < len(first)  # the first sentence's tail not yet out
    chunks.close()  # type: ignore[attr-defined]
    assert batch.live_rows == 0 and batched._pending_decodes == []


def test_next_sentence_failing_to_open_fails_after_the_sentence_before(
    batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the next sentence ahead fails (here its plan): the sentence before still
    ends with all its audio and its pause, then the stream raises that error."""
    import wyoming_sovits.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 1)
    _slow_decodes(monkeypatch, polls=2)
    prompt = batched.prepare_prompt(make_voice())
    first = np.concatenate(list(batched.synthesize("Good morning!", prompt, GREEDY, stream=True)))
    plan = Pipeline._plan
    plans: list[str] = []

    def second_fails(self: Pipeline, prompt: object, feats: object, cfg: object) -> object:
        plans.append("plan")
        if len(plans) == 2:
            raise SamplingError("the second sentence's plan")
        return plan(self, prompt, feats, cfg)  # type: ignore[arg-type]

    monkeypatch.setattr(Pipeline, "_plan", second_fails)
    heard: list[np.ndarray] = []
    with pytest.raises(SamplingError, match="second sentence"):
        for chunk in batched.synthesize(
            "Good morning! The kettle is on.", prompt, GREEDY, stream=True
        ):
            heard.append(chunk)
    assert len(plans) == 2  # the second was planned ahead, while the first's end decoded
    np.testing.assert_allclose(np.concatenate(heard), first, atol=1e-5)  # its audio and pause
    assert all(b.live_rows == 0 for b in batched._batchers.values())


class _TwoRowBuckets:
    """Stands in for ``SoVITSGraphs`` (CUDA only; ``decode_rows`` is tested on the GPU in
    test_fast.py): buckets of at most two rows, decoded by the eager batched call."""

    def __init__(self, sovits: SoVITS) -> None:
        self.model = sovits
        self.calls: list[int] = []

    def fits(self, tokens: int, phones: int, rows: int = 1) -> bool:
        return rows == 2  # one sentence alone keeps the eager path here

    # decode_windows: tested with SoVITSGraphs (use_graphs=False) below
    def windowed(self, tokens: int, phones: int, rows: int, window: int, sent: bool) -> bool:
        return False

    def price(self, tokens: int, phones: int, rows: int, window: int, *_: object) -> int | None:
        return rows * window if rows == 2 else None

    def price_rows(self, rows: int) -> int:
        return rows

    def window_frames(self, tokens: int, start: int) -> int:
        return 2 * tokens

    def decode_rows(self, rows: list) -> list[torch.Tensor]:  # type: ignore[type-arg]
        self.calls.append(len(rows))
        return [torch.from_numpy(a) for a in decode_batch(self.model, rows)]


def test_queued_decodes_split_into_graph_buckets(
    single: Pipeline, batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SoVITS graphs, queued decodes are cut into batches that fit one graph bucket;
    the rest decodes eagerly, and every stream still gets its own audio."""
    import wyoming_sovits.pipeline as pipeline_module

    buckets = _TwoRowBuckets(batched.sovits.model)
    monkeypatch.setattr(batched, "_graphs_for", lambda path: buckets)
    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 2)
    prompt = single.prepare_prompt(make_voice())
    want = [np.concatenate(list(single.synthesize(t, prompt, GREEDY, stream=True))) for t in TEXTS]
    got = _interleave(batched, prompt)
    assert buckets.calls and set(buckets.calls) == {2}  # three queued: two in a replay
    for chunks, w in zip(got, want, strict=True):
        audio = np.concatenate(chunks)
        assert audio.shape == w.shape
        assert np.linalg.norm(audio - w) <= 0.05 * np.linalg.norm(w)


def test_stream_closed_while_its_decode_waits(batched: Pipeline) -> None:
    prompt = batched.prepare_prompt(make_voice())
    chunks = iter(batched.synthesize("Good morning, everyone.", prompt, GREEDY, stream=True))
    for chunk in chunks:  # up to the first queued decode (the first empty chunk is the
        if len(chunk) == 0 and batched._pending_decodes:  # row waiting for its prefill)
            break
    assert len(batched._pending_decodes) == 1
    chunks.close()  # type: ignore[attr-defined]
    assert batched._pending_decodes == []
    (batch,) = batched._batchers.values()
    assert batch.live_rows == 0


def test_stream_closed_while_its_decode_is_in_flight(
    batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream closed while its decode's audio is on its way gives its row back; the
    batch keeps serving (the replay queued meanwhile is collected by the next sentence)."""
    import wyoming_sovits.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 1)
    never = _SlowEvent(polls=1 << 30)
    decode_rows = Pipeline._decode_rows

    def in_flight(self: Pipeline, path: Path, batch: list) -> None:  # type: ignore[type-arg]
        decode_rows(self, path, batch)
        for queued in batch:
            queued.done = never

    monkeypatch.setattr(Pipeline, "_decode_rows", in_flight)
    prompt = batched.prepare_prompt(make_voice())
    chunks = iter(batched.synthesize("Good morning, everyone.", prompt, GREEDY, stream=True))
    for _, chunk in zip(range(200), chunks, strict=False):
        assert len(chunk) == 0  # nothing comes back: the decode does not complete
        if never.queries:
            break
    (batch,) = batched._batchers.values()
    # polled once; the row stepped meanwhile: a replay is queued for it
    assert never.queries == 1 and batch.live_rows == 1 and batch._pending is not None
    chunks.close()  # type: ignore[attr-defined]
    assert batch.live_rows == 0 and batched._pending_decodes == []
    monkeypatch.setattr(Pipeline, "_decode_rows", decode_rows)
    audio = np.concatenate(
        list(batched.synthesize("Dinner is ready.", prompt, GREEDY, stream=True))
    )
    assert audio.size > 0 and batch.live_rows == 0


@RUN_AHEAD
def test_rows_opened_together_prefill_together(
    monkeypatch: pytest.MonkeyPatch, run_ahead: bool
) -> None:
    """``defer_prefill``: rows opened before the next step share one (left-padded) prefill
    into their own cache rows, and each row's greedy tokens are its single-run tokens."""
    model = tiny_model(1)
    items = [request(5 + 3 * i, 4 + 5 * i, seed=20 + i) for i in range(3)]
    want = [
        generate(model, i.phone_ids, i.bert, i.prompt_tokens, top_k=1, max_new_tokens=16).tolist()
        for i in items
    ]
    b = ContinuousBatcher(model, 4, 96, max_new_tokens=20, kv_bucket=32, use_graphs=False,
                          defer_prefill=True, run_ahead=run_ahead)  # fmt: skip
    calls: list[int] = []
    real = model.prefill

    def counting(packed: object, row: int = 0, rows: object = None) -> torch.Tensor:
        calls.append(packed.batch_size)  # type: ignore[attr-defined]
        return real(packed, row=row, rows=rows)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "prefill", counting)
    b.open(items[0], GREEDY_PARAMS, 16).close()  # row 0 taken, given back
    streams = [b.open(i, GREEDY_PARAMS, 16) for i in items]
    assert calls == [] and [len(next(s)) for s in streams] == [0, 0, 0]
    got = [[t for chunk in s for t in chunk.tolist()] for s in streams]
    assert calls == [3]
    assert got == want


def _batched_and_alone(
    models_dir: Path, max_streams: int, kernels: str
) -> tuple[Pipeline, Pipeline, Prompt]:
    """On CUDA: a pipeline batching ``max_streams`` streams on ``kernels``, a one-stream
    one on the PyTorch step, and a prompt for both."""
    batched = Pipeline.load(models_dir, "cuda", "float32", cache_dir=None, fast=True,
                            max_streams=max_streams, gpt_kernels=kernels)  # fmt: skip
    alone = Pipeline.load(models_dir, "cuda", "float32", cache_dir=None, fast=True,
                          gpt_kernels="torch")  # fmt: skip
    batched.max_new_tokens = alone.max_new_tokens = MAX_TOKENS
    return batched, alone, alone.prepare_prompt(make_voice())


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize(
    ("overlap", "above"),
    [(False, True), (True, True), (True, False)],
    ids=["GPT's stream", "own stream", "own stream, GPT below"],
)
def test_streams_batched_on_gpu(
    models_dir: Path, kernels: str, overlap: bool, above: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA (graphs, batched prefill and SoVITS, optionally Triton): three interleaved
    streams speak as each does alone through the default fast path, the SoVITS decodes on
    the GPT's CUDA stream or on their own, overlapping the GPT's replays, which then run on
    a stream of higher priority still (``GPT_ABOVE_DECODES``), as do the prefills
    (``prefill_on_replay_stream``), or on the caller's."""
    import wyoming_sovits.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 2)
    monkeypatch.setattr(pipeline_module, "OVERLAP_DECODES_MIN_STREAMS", 3 if overlap else 4)
    monkeypatch.setattr(pipeline_module, "GPT_ABOVE_DECODES", above)
    gpu, alone, prompt = _batched_and_alone(models_dir, 3, kernels)
    want = [np.concatenate(list(alone.synthesize(t, prompt, GREEDY, stream=True))) for t in TEXTS]
    flush, stepping = gpu._flush_decodes, []

    def flush_noting_a_queued_replay() -> None:
        stepping.append(any(b._pending is not None for b in gpu._batchers.values()))
        flush()

    monkeypatch.setattr(gpu, "_flush_decodes", flush_noting_a_queued_replay)
    prefill_rows, prefilled_on = ContinuousBatcher._prefill_rows, []

    def prefill_noting_its_stream(self: ContinuousBatcher, group: list) -> None:  # type: ignore[type-arg]
        side = self._replay_stream
        prefilled_on.append(side is not None and torch.cuda.current_stream(self.device) == side)
        prefill_rows(self, group)

    monkeypatch.setattr(ContinuousBatcher, "_prefill_rows", prefill_noting_its_stream)
    got = _interleave(gpu, prompt)
    assert prefilled_on and all(prefilled_on) is (overlap and above)
    # several streams read each replay before queueing the next (measured faster)
    assert not any(b.run_ahead for b in gpu._batchers.values())
    assert (gpu._decode_stream is not None) is overlap
    if overlap and above:  # the GPU steps the GPT while the host builds the decodes
        assert any(stepping)
    for b in gpu._batchers.values():
        assert (b._replay_stream is not None) is (overlap and above)
        if b._replay_stream is not None:
            assert b._replay_stream.priority < gpu._decode_stream.priority  # type: ignore[union-attr]
    for chunks, w in zip(got, want, strict=True):
        audio = np.concatenate(chunks)
        assert audio.shape == w.shape
        assert np.linalg.norm(audio - w) <= 0.05 * np.linalg.norm(w)


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_one_stream_in_a_wide_batch_steps_one_row_on_gpu(models_dir: Path, kernels: str) -> None:
    """A pipeline batching 8 streams serving one: its replays step one row (graphs of the
    one-row bucket; Triton: the step built for one row), and it speaks as a one-stream
    pipeline does."""
    wide, alone, prompt = _batched_and_alone(models_dir, 8, kernels)
    want = np.concatenate(list(alone.synthesize(TEXTS[1], prompt, GREEDY, stream=True)))
    got = np.concatenate(list(wide.synthesize(TEXTS[1], prompt, GREEDY, stream=True)))
    (batch,) = wide._batchers.values()
    assert batch.buckets == (1, 4, 8)
    assert {rows for _, _, rows in batch._graphs} == {1}
    assert got.shape == want.shape
    assert np.linalg.norm(got - want) <= 0.05 * np.linalg.norm(want)


def test_vocode_windows_match_the_whole_vocode(single: Pipeline) -> None:
    """Rows of different lengths, each vocoded from its start (with the vocoder's reach
    of context), give the samples of vocoding all its frames alone."""
    sovits = single.sovits.model
    up, reach = sovits.cfg.upsample_factor, sovits.cfg.vocoder_reach_frames
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, sovits.cfg.inter_channels, 40, generator=g) * 0.1
    ge = single.prepare_prompt(make_voice()).ge.expand(3, -1, -1)
    frames, starts = [40, 25, 31], [0, 20, reach + 3]
    with torch.inference_mode():
        got = vocode_windows(sovits, z, ge, frames, starts)
        for b, (n, s) in enumerate(zip(frames, starts, strict=True)):
            whole = sovits.vocode(z[b : b + 1, :, :n], ge[b : b + 1])[0, 0]
            assert got[b].shape == ((n - s) * up,)
            torch.testing.assert_close(got[b], whole[s * up :], rtol=0, atol=1e-5)
        (empty,) = vocode_windows(sovits, z[:1], ge[:1], [40], [40])
    assert empty.shape == (0,)


def test_filled_windows_need_no_masks_where_every_row_is_long_enough(single: Pipeline) -> None:
    """``fill`` widens each window over its row's earlier frames to the widest: rows that
    have the frames need no masks (not ragged), and the samples from each start are the
    same; a row shorter than the width keeps its mask."""
    sovits = single.sovits.model
    up, reach = sovits.cfg.upsample_factor, sovits.cfg.vocoder_reach_frames
    frames, starts = [40, 40, 36], [30, 20, 33]
    plain = VocoderWindows.of(starts, frames, reach)
    filled = VocoderWindows.of(starts, frames, reach, fill=True)
    assert plain.widths == (10 + reach, 20 + reach, 3 + reach) and plain.ragged
    assert filled.widths == (20 + reach,) * 3 and not filled.ragged
    assert filled.lows == (20 - reach, 20 - reach, 16 - reach)
    g = torch.Generator().manual_seed(6)
    z = torch.randn(3, sovits.cfg.inter_channels, 40, generator=g) * 0.1
    ge = single.prepare_prompt(make_voice()).ge.expand(3, -1, -1)
    with torch.inference_mode():
        index = filled.index.expand(-1, z.shape[1], -1)
        got = filled.cut(sovits.vocode(torch.gather(z, 2, index), ge), up)
        for b, (n, s) in enumerate(zip(frames, starts, strict=True)):
            whole = sovits.vocode(z[b : b + 1, :, :n], ge[b : b + 1])[0, 0]
            torch.testing.assert_close(got[b], whole[s * up :], rtol=0, atol=1e-5)
    short = VocoderWindows.of([30, 0], [40, 5], reach, fill=True)  # 10 + reach wide
    assert short.widths == (10 + reach, 5) and short.lows == (30 - reach, 0) and short.ragged
    assert VocoderWindows.of([30], [40], reach, rows=2).ragged  # a spare row, length 1
    spare = VocoderWindows.of([30], [40], reach, rows=2, fill=True)  # the first row's
    assert not spare.ragged and spare.index[1].tolist() == spare.index[0].tolist()


def _window_rows(
    single: Pipeline, specs: list[tuple[int, int, int]]
) -> tuple[
    list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]],
    list[int],
    list[np.ndarray],
]:
    """Rows (tokens, phones, ge, noise, scale) of (tokens, phones, start frame) specs, their
    starts, and each row's audio from its start decoded alone, eagerly."""
    sovits = single.sovits.model
    ge = single.prepare_prompt(make_voice()).ge
    g = torch.Generator().manual_seed(1)
    rows, starts, want = [], [], []
    for n, length, start in specs:
        tokens = torch.randint(0, 1024, (n,), generator=g)
        phones = torch.randint(1, 60, (length,), generator=g)
        tape = NoiseTape(
            sovits.cfg.inter_channels, torch.Generator().manual_seed(n), torch.device("cpu")
        )
        want.append(decode_latents(sovits, tokens, phones, ge, 1.0, 0.5, tape, start)[2])
        rows.append((tokens, phones, ge, tape.take(2 * n), 0.5))
        starts.append(start)
    return rows, starts, want


def _close(got: torch.Tensor | np.ndarray, want: np.ndarray) -> None:
    got = got.numpy() if isinstance(got, torch.Tensor) else got
    assert got.shape == want.shape
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


def test_graph_buckets_decode_windows_as_each_row_alone(single: Pipeline) -> None:
    """``SoVITSGraphs`` on its padded buffers, run eagerly (``use_graphs=False``; on the GPU
    the same buffers are replayed): ``decode_windows`` gives each row's audio from its
    start frame, as decoding it alone does, from one latents and one vocoder bucket."""
    sovits = single.sovits.model
    graphs = SoVITSGraphs(sovits, use_graphs=False, window_buckets=(32, 64, 128))
    specs = [(30, 12, 20), (17, 20, 0), (45, 7, 70), (24, 9, 48)]
    rows, starts, want = _window_rows(single, specs)
    got = graphs.decode_windows(rows, starts)
    reach = sovits.cfg.vocoder_reach_frames
    widest = max(2 * n - max(0, s - reach) for n, _, s in specs)  # the 17-token row, 34
    assert graphs.captured_windows == [(4, graphs.window_width(widest), True)] == [(4, 64, True)]
    for a, w in zip(got, want, strict=True):
        _close(a, w)
    for a, w in zip(
        graphs.decode_rows(rows),
        _window_rows(single, [(n, p, 0) for n, p, _ in specs])[2],
        strict=True,
    ):
        _close(a, w)  # the whole decode of the same buffers
    with pytest.raises(VitsInputError, match="starts"):
        graphs.decode_windows(rows, starts[:2])
    with pytest.raises(FastPathError, match="no graph bucket"):
        graphs.decode_windows(rows * 17, starts * 17)  # 68 rows


def test_windows_that_fill_their_bucket_replay_an_unmasked_vocoder(single: Pipeline) -> None:
    """Windows widened over their rows' earlier frames to the bucket's width need no masks
    (a vocoder graph without them); a row shorter than the bucket takes the masked one.
    Several rows that have sent nothing go through the windowed graphs too, one alone
    through the whole decode's."""
    graphs = SoVITSGraphs(single.sovits.model, use_graphs=False, window_buckets=(32, 64))
    specs = [(30, 12, 40), (17, 20, 20), (45, 7, 70), (24, 9, 48)]  # frames 34 to 90
    rows, starts, want = _window_rows(single, specs)
    for a, w in zip(graphs.decode_windows(rows, starts), want, strict=True):
        _close(a, w)
    assert graphs.captured_windows == [(4, 32, False)]  # the widest window: 20 + reach
    short = _window_rows(single, [(30, 12, 40), (12, 20, 0)])  # 24 frames < 32
    for a, w in zip(graphs.decode_windows(short[0], short[1]), short[2], strict=True):
        _close(a, w)
    assert (2, 32, True) in graphs.captured_windows
    assert graphs.windowed(30, 20, 2, 60, sent=False) and graphs.windowed(30, 20, 1, 60, True)
    assert not graphs.windowed(30, 20, 1, 60, sent=False)
    assert graphs.price(30, 20, 4, 27, True, 34) == 4 * 32  # captured
    assert graphs.price(30, 20, 3, 40, True, 60) == 4 * 64 + CAPTURE_FRAMES  # masked: new
    assert graphs.price(30, 20, 1, 60, False, 60) == 50 * 2 + CAPTURE_FRAMES  # whole
    assert graphs.price(600, 20, 2, 60, True, 1200) is None


def test_queued_decodes_split_into_the_calls_that_vocode_least(
    batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorted by window, queued decodes split where one padded call would vocode more
    frames than two: six short windows and a long one are two calls; similar ones are
    one; calls never exceed what one call holds (eager: ``BATCH_DECODE_MAX_TOKENS``)."""
    from types import SimpleNamespace

    from wyoming_sovits.pipeline import BATCH_DECODE_MAX_TOKENS, _DecodeRequest

    prompt = batched.prepare_prompt(make_voice())

    def request(tokens: int, sent: int) -> _DecodeRequest:
        feats = SimpleNamespace(ids=torch.zeros(20, dtype=torch.long))
        return _DecodeRequest(prompt, torch.zeros(tokens, dtype=torch.long), feats,  # type: ignore[arg-type]
                              SynthesisConfig(), None, sent)  # type: ignore[arg-type]  # fmt: skip

    short, long = [request(36, 16) for _ in range(6)], request(240, 280)
    calls = batched._decode_calls(prompt.sovits, [long, *short])
    assert [len(c) for c in calls] == [6, 1] and calls[1] == [long]
    similar = [request(36, 16) for _ in range(5)] + [request(40, 16)]
    assert [len(c) for c in batched._decode_calls(prompt.sovits, similar)] == [6]
    many = [request(300, 0) for _ in range(20)]  # 6,000 tokens
    calls = batched._decode_calls(prompt.sovits, many)
    assert sum(len(c) for c in calls) == 20
    assert all(300 * len(c) <= BATCH_DECODE_MAX_TOKENS for c in calls)
    # with graphs: 40 streams are one bucket of 64 rows, or 32 + 8 once those are captured
    graphs = SoVITSGraphs(batched.sovits.model, use_graphs=False)
    monkeypatch.setattr(batched, "_graphs_for", lambda path: graphs)
    forty = [request(36, 16) for _ in range(40)]
    assert [len(c) for c in batched._decode_calls(prompt.sovits, forty)] == [40]
    window = graphs.window_frames(36, 16)
    for rows in (8, 32):
        assert graphs.capture_windows(36, 20, rows, window, masked=False)
    assert sorted(len(c) for c in batched._decode_calls(prompt.sovits, forty)) == [8, 32]


def test_windowed_graphs_that_fail_to_capture_leave_whole_decodes(
    single: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A windowed capture that fails turns the windowed graphs off (logged, once); the
    pipeline then decodes the whole prefixes from their bucket and cuts them."""
    graphs = SoVITSGraphs(single.sovits.model, use_graphs=False)

    def refuse(*args: object) -> None:
        raise RuntimeError("capture refused")

    monkeypatch.setattr(graphs, "_captured", refuse)
    rows, starts, want = _window_rows(single, [(30, 12, 20), (17, 20, 8)])
    with caplog.at_level("WARNING", logger="wyoming_sovits.fast"):
        assert not graphs.capture_windows(30, 20, 2, 60)
        assert not graphs.capture_windows(30, 20, 2, 60)
    assert graphs.windows_failed == "RuntimeError: capture refused"
    assert sum("windowed SoVITS graphs off" in r.message for r in caplog.records) == 1
    with pytest.raises(FastPathError, match="off"):
        graphs.decode_windows(rows, starts)
    for a, w in zip(Pipeline._graph_rows(graphs, rows, starts), want, strict=True):
        _close(a, w)
    assert graphs.captured_batches == [(2, 50, 32)] and graphs.captured_windows == []


def test_streams_decode_windowed_graph_buckets(
    single: Pipeline, batched: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SoVITS graphs, queued decodes of several rows go through ``decode_windows``,
    those after a stream's first vocoding only its unsent frames, and every stream gets
    the audio it gets alone."""
    import wyoming_sovits.pipeline as pipeline_module

    graphs = SoVITSGraphs(batched.sovits.model, use_graphs=False)
    windows: list[list[int]] = []
    real = graphs.decode_windows

    def spy(rows: list, starts: list[int]) -> list[torch.Tensor]:  # type: ignore[type-arg]
        windows.append(list(starts))
        return real(rows, starts)

    monkeypatch.setattr(graphs, "decode_windows", spy)
    monkeypatch.setattr(batched, "_graphs_for", lambda path: graphs)
    monkeypatch.setattr(pipeline_module, "BATCH_DECODE_MIN_ROWS", 2)
    prompt = single.prepare_prompt(make_voice())
    want = [np.concatenate(list(single.synthesize(t, prompt, GREEDY, stream=True))) for t in TEXTS]
    got = _interleave(batched, prompt)
    assert windows and not any(windows[0])  # the first decodes, several rows: windowed too
    assert any(any(s > 0 for s in starts) for starts in windows)
    assert graphs.captured_windows
    for chunks, w in zip(got, want, strict=True):
        audio = np.concatenate(chunks)
        assert audio.shape == w.shape
        assert np.linalg.norm(audio - w) <= 0.05 * np.linalg.norm(w)


def test_stream_sent_frames_follow_the_schedule(single: Pipeline) -> None:
    """What a stream has sent at each streamed decode (12, 36, 72, 144, 240 tokens, 4 held
    back) and so the window each vocodes."""
    from wyoming_sovits.pipeline import stream_sent_frames

    sent = [stream_sent_frames(n, 2) for n in (12, 36, 72, 144, 240)]
    assert sent == [0, 16, 64, 136, 280]
    graphs = SoVITSGraphs(single.sovits.model, use_graphs=False)
    windows = [
        graphs.window_frames(n, s) for n, s in zip((12, 36, 72, 144, 240), sent, strict=True)
    ]
    r = graphs.model.cfg.vocoder_reach_frames
    assert windows == [24, 72 - (16 - r), 144 - (64 - r), 288 - (136 - r), 480 - (280 - r)]


def test_windowed_buckets_hold_more_rows_than_whole_ones(single: Pipeline) -> None:
    """Windows bound the vocoder's memory by the frames it vocodes, not by the prefixes:
    64 streams at 100 tokens fit windowed graphs (not whole ones), up to the vocoder's
    frames; rows no graph serves decode eagerly (``_graph_rows`` None)."""
    graphs = SoVITSGraphs(single.sovits.model, use_graphs=False)
    reach = graphs.model.cfg.vocoder_reach_frames
    assert graphs.window_frames(36, 16) == 72 - (16 - reach)
    assert graphs.window_frames(12, 0) == 24 and graphs.window_frames(10, 99) == reach
    assert not graphs.fits(100, 60, rows=64)
    assert graphs.fits_windows(100, 60, 64, 92)  # 64 x 96 frames, 64 x 100 tokens
    assert not graphs.fits_windows(250, 60, 64, 212)  # 64 x 256 frames: over 8192
    assert graphs.fits_windows(500, 500, 1, 1000) and not graphs.fits_windows(100, 60, 65, 92)
    small = SoVITSGraphs(single.sovits.model, use_graphs=False, max_cells=40)
    rows, starts, want = _window_rows(single, [(30, 12, 40), (17, 20, 20)])
    got = Pipeline._graph_rows(small, rows, starts)  # 2 x 32 window frames: fits
    assert got is not None and small.captured_windows == [(2, 32, False)]
    for a, w in zip(got, want, strict=True):
        _close(a, w)
    assert Pipeline._graph_rows(small, rows, [0, 0]) is None  # 2 x 50 whole tokens: eager
    small.windows_failed = "off"
    assert not small.fits_windows(30, 20, 2, 32)


def test_price_rows_answers_as_the_row_count(single: Pipeline) -> None:
    """``_decode_calls`` prices a run of queued decodes by its row bucket
    (``SoVITSGraphs.price_rows``) to share answers: the same price for every count."""
    graphs = SoVITSGraphs(single.sovits.model, use_graphs=False, row_buckets=(2, 8, 64))
    graphs.capture_windows(12, 30, 8, 24, masked=False)  # one captured bucket prices less
    assert [graphs.price_rows(r) for r in (1, 2, 3, 8, 9, 64, 65)] == [1, 2, 8, 8, 64, 64, 65]
    for rows in range(1, 70):
        for tokens, phones, window, sent, shortest in [
            (12, 30, 24, False, 24), (36, 20, 68, True, 24), (100, 60, 92, True, 200),
            (250, 128, 212, False, 500), (12, 300, 24, False, 24),
        ]:  # fmt: skip
            args = (tokens, phones, window, sent, shortest)
            want = graphs.price(tokens, phones, rows, *args[2:])
            assert graphs.price(tokens, phones, graphs.price_rows(rows), *args[2:]) == want
