"""Engine: worker thread, fair queue, cancellation, prompt LRU, phrase cache, warm-up."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from fake_backend import FakeBackend, FakeSynthesisError, expected_samples, write_voice

from wyoming_sovits.engine import Engine, EngineClosedError, WarmUpError, _CallJob
from wyoming_sovits.phrase_cache import PhraseCache, PhraseKey
from wyoming_sovits.settings import ServerSettings, SynthesisConfig
from wyoming_sovits.voices import VoiceNotFoundError, VoiceRegistry


@pytest.fixture
def registry(tmp_path: Path) -> VoiceRegistry:
    write_voice(tmp_path, "alice", extra="synthesis:\n  seed: 7\n  top_k: 5\n")
    write_voice(tmp_path, "bob")
    write_voice(tmp_path, "carol")
    registry = VoiceRegistry(tmp_path)
    registry.scan()
    return registry


def make_engine(registry: VoiceRegistry, backend: FakeBackend, **overrides: object) -> Engine:
    settings = ServerSettings(voices_dir=registry.voices_dir, **overrides)  # type: ignore[arg-type]
    engine = Engine(backend, registry, settings)
    engine.start()
    return engine


async def collect(stream: object) -> np.ndarray:
    chunks = [chunk async for chunk in stream]  # type: ignore[attr-defined]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


async def test_synthesis_runs_on_worker_and_merges_config(registry: VoiceRegistry) -> None:
    backend = FakeBackend()
    engine = make_engine(registry, backend, synthesis=SynthesisConfig(temperature=0.5))
    try:
        stream = engine.synthesize("Hello.", "alice", SynthesisConfig(top_k=3), client_id=1)
        audio = await collect(stream)
    finally:
        engine.close()
    assert len(audio) == expected_samples("Hello.") and audio.dtype == np.float32
    assert backend.threads == {"sovits-engine"}
    cfg = backend.calls[0].cfg
    assert (cfg.seed, cfg.top_k, cfg.temperature) == (7, 3, 0.5)  # voice < server < request


async def test_round_robin_between_clients(registry: VoiceRegistry) -> None:
    backend = FakeBackend(delay=0.005)
    engine = make_engine(registry, backend)
    try:
        gate = threading.Event()
        blocker = engine._queue  # hold the worker until all jobs are queued
        blocker.put(_CallJob("gate", gate.wait))
        a = [engine.synthesize(f"A{i}.", "bob", SynthesisConfig(), "a") for i in range(3)]
        b = [engine.synthesize(f"B{i}.", "bob", SynthesisConfig(), "b") for i in range(2)]
        gate.set()
        await asyncio.gather(*(collect(s) for s in a + b))
    finally:
        engine.close()
    assert backend.texts() == ["A0.", "B0.", "A1.", "B1.", "A2."]


async def test_cancel_client_stops_its_work(registry: VoiceRegistry) -> None:
    backend = FakeBackend(delay=0.05, chunk_samples=100)
    engine = make_engine(registry, backend)
    try:
        first = engine.synthesize("x" * 40, "bob", SynthesisConfig(), "gone")
        queued = engine.synthesize("Never.", "bob", SynthesisConfig(), "gone")
        await first.__anext__()
        assert engine.cancel_client("gone") == 2
        rest = await asyncio.wait_for(collect(first), 2.0)
        assert len(rest) < expected_samples("x" * 40)
        assert len(await asyncio.wait_for(collect(queued), 2.0)) == 0
        audio = await asyncio.wait_for(
            collect(engine.synthesize("Ok.", "bob", SynthesisConfig(), 2)), 2.0
        )
    finally:
        engine.close()
    assert len(audio) == expected_samples("Ok.")
    assert "Never." not in backend.texts()


async def test_backend_error_reaches_consumer(registry: VoiceRegistry) -> None:
    engine = make_engine(registry, FakeBackend())
    try:
        with pytest.raises(FakeSynthesisError):
            await collect(engine.synthesize("EXPLODE.", "bob", SynthesisConfig(), 1))
        with pytest.raises(VoiceNotFoundError, match="alice, bob, carol"):
            engine.synthesize("Hi.", "nobody", SynthesisConfig(), 1)
    finally:
        engine.close()
    with pytest.raises(EngineClosedError):
        engine.synthesize("Hi.", "bob", SynthesisConfig(), 1)


async def test_prompt_cache_lru_mtime_and_pin(registry: VoiceRegistry, tmp_path: Path) -> None:
    backend = FakeBackend()
    engine = make_engine(registry, backend, prompt_cache_size=1)
    try:
        engine.warm_up(["alice"])  # pinned: never evicted
        for name in ["bob", "carol", "alice", "bob"]:
            await collect(engine.synthesize("Hi.", name, SynthesisConfig(), 1))
        assert [p.voice for p in backend.prepared] == ["alice", "bob", "carol", "bob"]
        # A changed clip (newer mtime) invalidates the prepared prompt.
        clip = tmp_path / "alice" / "ref.wav"
        stat = clip.stat()
        os.utime(clip, (stat.st_atime, stat.st_mtime + 10))
        registry.scan()
        await collect(engine.synthesize("Hi.", "alice", SynthesisConfig(), 1))
    finally:
        engine.close()
    assert [p.voice for p in backend.prepared][-1] == "alice"
    assert engine.prompts_prepared == 5


async def test_phrase_cache_only_when_deterministic(registry: VoiceRegistry) -> None:
    backend = FakeBackend()
    engine = make_engine(registry, backend)
    try:
        for _ in range(2):
            await collect(engine.synthesize("Done.", "alice", SynthesisConfig(), 1))  # seed 7
            await collect(engine.synthesize("Done.", "bob", SynthesisConfig(), 1))  # no seed
        seeded = await collect(engine.synthesize("Done.", "bob", SynthesisConfig(seed=1), 1))
        again = await collect(engine.synthesize("Done.", "bob", SynthesisConfig(seed=1), 1))
    finally:
        engine.close()
    assert backend.texts().count("Done.") == 1 + 2 + 1
    assert np.array_equal(seeded, again)
    assert engine.phrase_cache.hits == 2


async def test_phrase_cache_any_and_disabled(registry: VoiceRegistry) -> None:
    backend = FakeBackend()
    engine = make_engine(registry, backend, phrase_cache_nondeterministic=True)
    try:
        for _ in range(2):
            await collect(engine.synthesize("Same.", "bob", SynthesisConfig(), 1))
    finally:
        engine.close()
    assert backend.texts() == ["Same."]
    backend = FakeBackend()
    engine = make_engine(registry, backend, phrase_cache_size=0)
    try:
        for _ in range(2):
            await collect(engine.synthesize("Same.", "alice", SynthesisConfig(), 1))
    finally:
        engine.close()
    assert backend.texts() == ["Same.", "Same."]


def test_batching_engine_shortens_the_switch_interval_while_it_runs(
    registry: VoiceRegistry,
) -> None:
    """With several streams the event loop gets the GIL back within half a millisecond of
    asking (not the interpreter's 5 ms); a one-stream engine leaves it; close restores it."""
    import sys

    from wyoming_sovits.engine import BATCHING_SWITCH_INTERVAL_S

    before = sys.getswitchinterval()
    assert before > BATCHING_SWITCH_INTERVAL_S
    single = make_engine(registry, FakeBackend())
    assert sys.getswitchinterval() == before
    single.close()
    batching = FakeBackend()
    batching.max_concurrent = 4  # type: ignore[attr-defined]
    engine = make_engine(registry, batching)
    try:
        assert engine.capacity == 4
        assert sys.getswitchinterval() == pytest.approx(BATCHING_SWITCH_INTERVAL_S)
    finally:
        engine.close()
    assert sys.getswitchinterval() == before


def test_phrase_cache_lru() -> None:
    cache = PhraseCache(2)
    keys = [PhraseKey("v", None, 1.0, f"t{i}", SynthesisConfig(seed=1)) for i in range(3)]
    for key in keys:
        cache.put(key, np.ones(4, np.float32))
    assert cache.get(keys[0]) is None and len(cache) == 2
    audio = cache.get(keys[2])
    assert audio is not None and not audio.flags.writeable


def test_warm_up_freezes_the_heap_until_close(registry: VoiceRegistry) -> None:
    """After warm-up what is alive (models, graphs) is out of the garbage collector's sight
    (``freeze_heap``): its full collections no longer walk it while serving. Closing the
    engine gives it back, so cycles among what it held are freed again."""
    import gc

    gc.unfreeze()
    engine = make_engine(registry, FakeBackend())
    try:
        assert gc.get_freeze_count() == 0
        engine.warm_up(["bob"])
        assert gc.get_freeze_count() > 0
    finally:
        engine.close()
    assert gc.get_freeze_count() == 0


def test_warm_up_runs_on_worker_and_reports_failure(registry: VoiceRegistry) -> None:
    backend = FakeBackend()
    engine = make_engine(registry, backend)
    try:
        engine.warm_up(["bob"])
        assert backend.threads == {"sovits-engine"} and backend.texts()
        backend.fail_marker = "welcome"
        with pytest.raises(WarmUpError, match="carol"):
            engine.warm_up(["carol"])
    finally:
        engine.close()
