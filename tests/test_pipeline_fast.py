"""The pipeline's fast path (GPT graph runner, SoVITS graphs) against its eager path.

On CPU the runner is forced on (``fast=True``) and runs its step eagerly: the same step,
sampler and stop rule the CUDA graphs replay, so greedy decoding must give the very
tokens and audio of the eager loop, whole and streamed. The ``gpu`` test does the same
with graphs on CUDA (deselected in CI). Models are the tiny random ones of
``test_pipeline.py``; their GPT never emits EOS, so every sentence runs to the cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_backend import FakeBackend, write_voice
from scratch import scratch
from test_t2s import request, tiny_model
from tiny_frontends import make_tiny_models_dir

import wyoming_sovits
from wyoming_sovits import pipeline as pipeline_module
from wyoming_sovits.engine import Engine
from wyoming_sovits.fast import TOP_K_CAP, T2SGraphRunner
from wyoming_sovits.generate import SamplingParams
from wyoming_sovits.models.t2s import Text2Semantic, pack_inputs
from wyoming_sovits.pipeline import STREAM_CHUNK_TOKENS, Fragment, NoiseTape, Pipeline
from wyoming_sovits.prompt import Prompt
from wyoming_sovits.settings import ServerSettings, SynthesisConfig
from wyoming_sovits.voices import ReferenceClip, VoiceProfile, VoiceRegistry

CLIP = Path(
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav"
)
TRANSCRIPT = "unless to be rather cold hearted and rather selfish is to be ill disposed"
if not CLIP.is_file():  # a GPU machine without Debian's test data: the bundled clip
    CLIP = Path(wyoming_sovits.__file__).parent / "data" / "voices" / "austen" / "reference.wav"
    TRANSCRIPT = (
        "And Mister John Dashwood had then leisure to consider how much there might be "
        "prudently in his power to do for them."
    )
MAX_TOKENS = 16
SAMPLES_PER_TOKEN = 1280
TEXT = "Good morning! How are you today?"
GREEDY = SynthesisConfig(seed=5, top_k=1, noise_scale=0.5, fragment_pause=0.1)


def make_voice() -> VoiceProfile:
    return VoiceProfile(
        name="austen",
        display_name="austen",
        languages=("en_US",),
        text_language="en",
        reference=ReferenceClip(CLIP, TRANSCRIPT, "en"),
        path=CLIP.parent / "voice.yaml",
        mtime=0.0,
    )


def load(models_dir: Path, device: str, fast: bool | None) -> Pipeline:
    loaded = Pipeline.load(
        models_dir, device, "float32", cache_dir=None, fast=fast, gpt_kernels="torch"
    )
    loaded.max_new_tokens = MAX_TOKENS
    return loaded


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with scratch(tmp_path_factory, "models") as folder:
        yield make_tiny_models_dir(folder)


@pytest.fixture(scope="module")
def plain(models_dir: Path) -> Pipeline:
    return load(models_dir, "cpu", fast=False)


@pytest.fixture(scope="module")
def fast(models_dir: Path) -> Pipeline:
    return load(models_dir, "cpu", fast=True)


@pytest.fixture(scope="module")
def prompt(plain: Pipeline) -> Prompt:
    return plain.prepare_prompt(make_voice())


def forbid_eager_gpt(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail if the pipeline falls back to the eager GPT loop."""

    def eager(*args: object, **kwargs: object) -> None:
        raise AssertionError("the eager GPT loop ran instead of the runner")

    monkeypatch.setattr(pipeline_module, "generate", eager)
    monkeypatch.setattr(pipeline_module, "generate_stream", eager)


def assert_same_fragments(got: list[Fragment], want: list[Fragment]) -> None:
    assert [f.text for f in got] == [f.text for f in want] and len(want) == 2
    for a, b in zip(got, want, strict=True):
        assert a.tokens.tolist() == b.tokens.tolist() and len(a.tokens) == MAX_TOKENS
        torch.testing.assert_close(a.m_p, b.m_p, rtol=0, atol=0)
        torch.testing.assert_close(a.z, b.z, rtol=0, atol=0)
        np.testing.assert_array_equal(a.audio, b.audio)


def test_defaults_follow_the_device(plain: Pipeline, fast: Pipeline) -> None:
    assert (plain.fast, fast.fast) == (False, True)
    assert Pipeline.__init__.__kwdefaults__["fast"] is None  # None: on exactly on CUDA


def test_runner_stream_tokens_match_generate_packed() -> None:
    model = tiny_model(2)
    runner = T2SGraphRunner(model, 1, 64, max_new_tokens=32, steps_per_sync=3, use_graphs=False)
    packed = pack_inputs([request(5, 4, 0)], model.config)
    params = SamplingParams(top_k=5, temperature=1.2)
    torch.manual_seed(3)
    chunks = list(runner.stream_tokens(packed, params, max_new_tokens=13))
    torch.manual_seed(3)
    (whole,) = runner.generate_packed(packed, [params], max_new_tokens=13)
    assert [len(c) for c in chunks] == [3, 3, 3, 3, 1]  # one chunk per replay, cap 13
    assert torch.cat(chunks).tolist() == whole.tolist()


def test_greedy_fragments_match_eager(
    plain: Pipeline, fast: Pipeline, prompt: Prompt, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same tokens, latents and audio; the prior noise too (it has its own stream)."""
    want = list(plain.fragments(TEXT, prompt, GREEDY))
    forbid_eager_gpt(monkeypatch)
    got = list(fast.fragments(TEXT, prompt, GREEDY))
    assert_same_fragments(got, want)
    assert list(fast._runners) == [prompt.gpt]


def test_greedy_streaming_matches_eager(
    plain: Pipeline, fast: Pipeline, prompt: Prompt, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = list(plain.synthesize(TEXT, prompt, GREEDY, stream=True))
    forbid_eager_gpt(monkeypatch)
    got = list(fast.synthesize(TEXT, prompt, GREEDY, stream=True))
    # the first sentence: first piece, the rest, the pause; the second, decoded once
    # (``SENTENCE_LEAD``): its audio, the pause
    assert len(got) == len(want) >= 5
    assert fast._runners[prompt.gpt].steps_per_sync == STREAM_CHUNK_TOKENS
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pipeline_name", ["plain", "fast"])
def test_streamed_sentence_ends_like_the_whole_with_noise(
    pipeline_name: str, request: pytest.FixtureRequest, prompt: Prompt
) -> None:
    """Sampled tokens do not depend on the noise draws, and the noise tape grows in
    blocks: the last streamed piece is the whole sentence's tail (its vocoder window
    starts later: rounding only)."""
    pipeline: Pipeline = request.getfixturevalue(pipeline_name)
    cfg = SynthesisConfig(seed=11, top_k=20, noise_scale=0.7, fragment_pause=0.1)
    (whole,) = list(pipeline.synthesize("Good morning!", prompt, cfg))
    pieces = list(pipeline.synthesize("Good morning!", prompt, cfg, stream=True))
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(whole)
    tail = len(pieces[-1]) + len(pieces[-2])  # pause + the audio decoded with every token
    np.testing.assert_allclose(streamed[-tail:], whole[-tail:], atol=1e-6)


def test_noise_tape_does_not_depend_on_how_it_is_taken() -> None:
    def tape() -> NoiseTape:
        return NoiseTape(3, torch.Generator().manual_seed(4), torch.device("cpu"))

    grown = tape()
    for frames in (5, 24, 70, 200):
        grown.take(frames)
    np.testing.assert_array_equal(grown.take(200).numpy(), tape().take(200).numpy())


def test_seeded_sampling_on_the_runner_is_reproducible(fast: Pipeline, prompt: Prompt) -> None:
    def say(seed: int) -> np.ndarray:
        cfg = SynthesisConfig(seed=seed, top_k=50, fragment_pause=0.1)
        return np.concatenate(list(fast.synthesize("Good morning!", prompt, cfg)))

    first = say(7)
    assert np.array_equal(first, say(7))
    assert not np.array_equal(first, say(8))


def test_top_k_beyond_the_cap_takes_the_eager_loop(
    plain: Pipeline, fast: Pipeline, prompt: Prompt, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_runner(*args: object, **kwargs: object) -> None:
        raise AssertionError("the runner cannot serve top_k above its cap")

    monkeypatch.setattr(T2SGraphRunner, "stream_packed", no_runner)
    cfg = SynthesisConfig(seed=9, top_k=TOP_K_CAP + 1, fragment_pause=0.1)
    for stream in (False, True):
        want = list(plain.synthesize("Good morning!", prompt, cfg, stream=stream))
        got = list(fast.synthesize("Good morning!", prompt, cfg, stream=stream))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_forward_factory_replaces_the_decode_step(models_dir: Path, prompt: Prompt) -> None:
    pipeline = load(models_dir, "cpu", fast=True)
    calls: list[int] = []

    def factory(model: Text2Semantic) -> object:
        def forward(tokens: torch.Tensor, input_pos: torch.Tensor, kv_len: int) -> torch.Tensor:
            calls.append(kv_len)
            return model(tokens, input_pos, kv_len=kv_len)

        return forward

    pipeline.t2s_forward_factory = factory  # type: ignore[assignment]
    fragments = list(pipeline.fragments("Good morning!", prompt, GREEDY))
    assert len(calls) == MAX_TOKENS  # one forward per step, the stopped ones included
    assert all(kv_len % 256 == 0 for kv_len in calls)
    eager = load(models_dir, "cpu", fast=False)
    (want,) = list(eager.fragments("Good morning!", prompt, GREEDY))
    assert fragments[0].tokens.tolist() == want.tokens.tolist()


def test_warm_up_has_nothing_to_capture_on_cpu(fast: Pipeline, prompt: Prompt) -> None:
    assert fast.warm_up(prompt) == 0.0
    with pytest.raises(TypeError, match="Prompt"):
        fast.warm_up("not a prompt")


class WarmingBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.warmed: list[tuple[object, SynthesisConfig]] = []

    def warm_up(self, prompt: object, cfg: SynthesisConfig) -> float:
        self.warmed.append((prompt, cfg))
        return 0.0


def test_engine_warm_up_calls_the_backends_warm_up(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice", extra="synthesis:\n  top_k: 5\n")
    registry = VoiceRegistry(tmp_path)
    registry.scan()
    backend = WarmingBackend()
    engine = Engine(backend, registry, ServerSettings(voices_dir=tmp_path))
    engine.start()
    try:
        engine.warm_up(["alice"])
    finally:
        engine.close()
    ((prompt, cfg),) = backend.warmed
    assert getattr(prompt, "voice", None) == "alice" and cfg.top_k == 5
    assert len(backend.calls) == 1  # and the warm-up phrase still runs


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.gpu
def test_graphs_match_eager_on_gpu(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    plain_gpu = load(models_dir, "cuda", fast=False)
    fast_gpu = load(models_dir, "cuda", fast=None)
    assert fast_gpu.fast  # the default on CUDA
    prompt = fast_gpu.prepare_prompt(make_voice())
    with caplog.at_level("INFO", logger="wyoming_sovits.pipeline"):
        assert fast_gpu.warm_up(prompt, GREEDY) > 0
    assert "Warm-up of voice austen" in caplog.text
    graphs = fast_gpu._sovits_graphs[prompt.sovits]
    captured = set(graphs.captured)
    assert (16, 32) in captured and len(captured) == 21
    want = list(plain_gpu.fragments(TEXT, prompt, GREEDY))
    got = list(fast_gpu.fragments(TEXT, prompt, GREEDY))
    for a, b in zip(got, want, strict=True):
        assert a.tokens.tolist() == b.tokens.tolist() and len(a.tokens) == MAX_TOKENS
        assert rel_l2(a.audio, b.audio) < 1e-3
    streamed = list(fast_gpu.synthesize(TEXT, prompt, GREEDY, stream=True))
    eager_streamed = list(plain_gpu.synthesize(TEXT, prompt, GREEDY, stream=True))
    assert [len(p) for p in streamed] == [len(p) for p in eager_streamed]
    assert rel_l2(np.concatenate(streamed), np.concatenate(eager_streamed)) < 1e-2
    assert set(graphs.captured) == captured  # the request used warmed-up graphs only


@pytest.mark.parametrize(("tokens", "bucket"), [(13, 16), (16, 25)])
def test_padded_decode_with_lengths_is_the_exact_length_decode(
    plain: Pipeline, tokens: int, bucket: int
) -> None:
    """What ``SoVITSGraphs`` captures: padded codes and phones with their lengths give the
    audio of the exact-length decode; a vocoder not told the lengths changes its end."""
    model = plain.sovits.model
    g = torch.Generator().manual_seed(tokens)
    codes = torch.randint(0, 1024, (1, 1, tokens), generator=g)
    text = torch.randint(0, 300, (1, 9), generator=g)
    ge = torch.randn(1, model.cfg.gin_channels, 1, generator=g)
    padded_codes = torch.cat([codes, torch.zeros(1, 1, bucket - tokens, dtype=torch.long)], 2)
    padded_text = torch.cat([text, torch.zeros(1, 32 - 9, dtype=torch.long)], 1)
    lengths = {"code_lengths": torch.tensor([tokens]), "text_lengths": torch.tensor([9])}
    samples = tokens * SAMPLES_PER_TOKEN
    with torch.no_grad():
        exact = model.decode(codes, text, ge, noise_scale=0.0)[0, 0]
        masked = model.decode(padded_codes, padded_text, ge, 0.0, **lengths)[0, 0, :samples]
        m, _, mask = model.encode_text_semantic(padded_codes, padded_text, ge, 1.0,
                                                   *lengths.values())  # fmt: skip
        z = model.flow_reverse(m, mask, ge) * mask
        unmasked = model.vocode(z, ge)[0, 0, :samples]
        frames = torch.tensor([2 * tokens])
        assert float((model.vocode(z, ge, frames)[0, 0, :samples] - masked).abs().max()) < 1e-6
    assert exact.shape == (samples,)
    torch.testing.assert_close(masked, exact, rtol=1e-4, atol=1e-5)
    assert float((unmasked - exact).abs().max()) > 1e-3


def test_vocoder_masks_are_built_once_per_rate(
    plain: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every activation rate of the vocoder builds its padding mask once per decode, not
    once per convolution (in a graph, four kernels a mask), and two lengths in one bucket
    are each their exact-length decode."""
    model = plain.sovits.model
    g = torch.Generator().manual_seed(5)
    bucket = 16
    codes = torch.randint(0, 1024, (1, 1, bucket), generator=g)
    text = torch.randint(0, 300, (1, 9), generator=g)
    ge = torch.randn(1, model.cfg.gin_channels, 1, generator=g)
    aranges = 0
    real_arange = torch.arange

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        nonlocal aranges
        aranges += 1
        return real_arange(*args, **kwargs)  # type: ignore[call-overload, no-any-return]

    codes[..., 11:] = 0  # the padding, as a graph's input buffer is filled
    convs = sum(isinstance(m, torch.nn.Conv1d | torch.nn.ConvTranspose1d)
                for m in model.dec.modules())  # fmt: skip
    rates = len(model.cfg.upsample_rates) + 1  # the latent frames, then each stage
    with torch.no_grad():
        for tokens in (11, 14):
            exact = model.decode(codes[..., :tokens], text, ge, noise_scale=0.0)[0, 0]
            monkeypatch.setattr(torch, "arange", counting)
            aranges = 0
            masked = model.decode(codes, text, ge, 0.0, code_lengths=torch.tensor([tokens]),
                                  text_lengths=torch.tensor([9]))[0, 0]  # fmt: skip
            monkeypatch.setattr(torch, "arange", real_arange)
            samples = tokens * SAMPLES_PER_TOKEN
            torch.testing.assert_close(masked[:samples], exact, rtol=1e-4, atol=1e-5)
            assert 0 < aranges <= rates + 8 < convs  # the encoders' masks use a few too


def test_the_graphs_decode_traces_whole_for_the_compiler(plain: Pipeline) -> None:
    """``SoVITSGraphs(compile=True)`` compiles ``_decode_body`` with dynamic shapes: it traces
    as one graph without breaks (a break would split the compiled decode), and the traced
    decode computes the eager one for another bucket and row count too."""
    from wyoming_sovits.fast import _decode_body

    model = plain.sovits.model
    cfg = model.cfg
    g = torch.Generator().manual_seed(3)

    def inputs(tokens: int, phones: int, real: list[int]) -> tuple[torch.Tensor, ...]:
        rows = len(real)
        return (
            torch.randint(0, 1024, (1, rows, tokens), generator=g),
            torch.randint(0, 300, (rows, phones), generator=g),
            torch.tensor(real),
            torch.full((rows,), phones - 2),
            torch.randn(rows, cfg.gin_channels, 1, generator=g),
            torch.randn(rows, cfg.inter_channels, 2 * tokens, generator=g),
            torch.full((rows, 1, 1), 0.5),
        )

    first = inputs(25, 32, [25, 19])
    explained = torch._dynamo.explain(_decode_body)(model, *first)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    counter = torch._dynamo.testing.CompileCounter()
    traced = torch.compile(_decode_body, dynamic=True, backend=counter)
    with torch.no_grad():
        for args in (first, inputs(50, 64, [50, 7, 33])):
            for got, want in zip(traced(model, *args), _decode_body(model, *args), strict=True):
                torch.testing.assert_close(got, want)
    assert 1 <= counter.frame_count <= 2
