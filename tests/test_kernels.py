"""The fused Triton decode step computes ``Text2Semantic.forward``'s function.

CI has no GPU, so the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set
by ``conftest.py`` before anything imports Triton), which executes the same kernel code on
CPU tensors with NumPy; on a GPU machine the same tests run compiled, on CUDA. Tiny models
keep it to seconds; the full-size comparison against the fp32 path (200 teacher-forced
steps) is in ``bench/gpu_bench.py``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pipeline_fast import GREEDY, TEXT, load, make_voice
from tiny_frontends import make_tiny_models_dir

import wyoming_sovits.pipeline as pipeline_module
from wyoming_sovits.__main__ import build_parser
from wyoming_sovits.fast import T2SGraphRunner
from wyoming_sovits.generate import SamplingParams
from wyoming_sovits.kernels import (
    AttentionConfig,
    FusedDecodeStep,
    GemvConfig,
    KernelUnavailableError,
    RowBucketSteps,
    tune_step,
)
from wyoming_sovits.models.t2s import T2SConfig, T2SInput, Text2Semantic, pack_inputs
from wyoming_sovits.pipeline import Pipeline
from wyoming_sovits.settings import ServerSettings, SettingsError

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = torch.device("cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda")
CONFIG = T2SConfig(
    vocab_size=65,
    phoneme_vocab_size=40,
    embedding_dim=64,
    hidden_dim=64,
    n_head=4,
    linear_units=256,
    n_layer=3,
    eos=64,
    bert_dim=32,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def model() -> Text2Semantic:
    torch.manual_seed(0)
    m = Text2Semantic(CONFIG).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)  # large enough that every layer matters
    return m.to(DEVICE)


def ragged(seed: int = 0) -> list[T2SInput]:
    """Three requests of different text and prompt lengths (left padding in the batch)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(7, 5), (4, 9), (10, 3)]
    return [
        T2SInput(
            torch.randint(0, 40, (n,), generator=g),
            torch.randn(32, n, generator=g),
            torch.randint(0, 64, (p,), generator=g),
        )
        for n, p in sizes
    ]


@torch.no_grad()
def decode(model: Text2Semantic, step: object, steps: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy steps after a shared prefill: logits (steps, B, V) and the key cache."""
    packed = pack_inputs(ragged(), CONFIG).to(DEVICE)
    model.setup_caches(3, 64)
    model.prefill(packed)
    pos = torch.full((3,), packed.length, dtype=torch.long, device=DEVICE)
    token = torch.tensor([1, 2, 3], device=DEVICE)
    out = []
    for _ in range(steps):
        logits = step(token, pos)  # type: ignore[operator]
        out.append(logits.float().clone())
        token, pos = logits.argmax(-1), pos + 1
    assert model.k_cache is not None
    return torch.stack(out), model.k_cache.clone()


def test_fused_step_equals_module_forward(model: Text2Semantic) -> None:
    want_logits, want_cache = decode(model, model)
    got_logits, got_cache = decode(model, FusedDecodeStep(model, 3))
    assert rel(got_logits, want_logits) < 1e-5
    assert rel(got_cache, want_cache) < 1e-6  # the step wrote k at every row's slot


@pytest.mark.parametrize(
    ("splits", "block_s", "block_n"),
    [(1, 16, 4), (4, 16, 2), (16, 2, 64)],  # 16 splits of ~1 slot: most splits are empty
)
def test_every_launch_shape_computes_the_same(
    model: Text2Semantic, splits: int, block_s: int, block_n: int
) -> None:
    """Split attention (combined in the out projection) and GEMV tiles of any shape."""
    want_logits, _ = decode(model, model, steps=3)
    shapes = {(int(p.shape[0]), int(p.shape[1])) for p in model.parameters() if p.ndim == 2}
    step = FusedDecodeStep(
        model,
        3,
        gemv={shape: GemvConfig(block_n, 2) for shape in shapes},
        attention=AttentionConfig(splits, block_s, 2),
    )
    got_logits, _ = decode(model, step, steps=3)
    assert rel(got_logits, want_logits) < 1e-5


@pytest.mark.parametrize(
    ("block_b", "block_n", "splits", "block_k"),
    # K steps of 64: the 64-wide weights in one step (ONE_K), the 256-wide in four; of
    # 16: every weight in several (LayerNorm statistics in their own loops); of 512: all
    # in one step
    [(16, 16, 1, 64), (16, 32, 2, 16), (32, 64, 4, 512)],
)
def test_row_blocked_gemv_computes_the_same(
    model: Text2Semantic, block_b: int, block_n: int, splits: int, block_k: int
) -> None:
    """``gemm_kernel`` (``GemvConfig.block_b`` > 1): the three rows in one block of 16 or
    32, every weight shape, the attention's splits combined in its prologue, the product
    in one K step or several."""
    want_logits, want_cache = decode(model, model, steps=3)
    shapes = {(int(p.shape[0]), int(p.shape[1])) for p in model.parameters() if p.ndim == 2}
    step = FusedDecodeStep(
        model,
        3,
        gemv={shape: GemvConfig(block_n, 4, block_b, block_k) for shape in shapes},
        attention=AttentionConfig(splits, 16, 2),
    )
    got_logits, got_cache = decode(model, step, steps=3)
    assert rel(got_logits, want_logits) < 1e-5
    assert rel(got_cache, want_cache) < 1e-6


def test_row_blocked_gemv_over_several_blocks(model: Text2Semantic) -> None:
    """More rows than one block of 16: each block of rows reads its own rows' vectors and
    writes its own rows' outputs (and LayerNorm residuals)."""
    rows = 18
    g = torch.Generator().manual_seed(7)
    model.setup_caches(rows, 32)
    prefix = torch.randint(0, 64, (2, rows), generator=g).to(DEVICE)  # (step, row)
    pos = torch.arange(2, device=DEVICE)
    blocked = FusedDecodeStep(model, rows, gemv={
        (int(p.shape[0]), int(p.shape[1])): GemvConfig(16, 4, 16)
        for p in model.parameters() if p.ndim == 2
    })  # fmt: skip
    with torch.no_grad():
        got, want = [], []
        for forward, out in ((model, want), (blocked, got)):
            model.setup_caches(rows, 32)
            for j in range(2):  # rows start at slot 0: every row attends over its own tokens
                logits = forward(prefix[j], pos[j].expand(rows).contiguous())
                out.append(logits.float().clone())
    assert rel(torch.stack(got), torch.stack(want)) < 1e-5
    assert rel(got[-1][16:], want[-1][16:]) < 1e-5  # the second block's rows too


def test_row_blocked_gemv_shape_is_checked(model: Text2Semantic) -> None:
    step = FusedDecodeStep(model, 2, gemv={(192, 64): GemvConfig(8, 4, 16)})
    model.setup_caches(2, 32)
    zeros = torch.zeros(2, dtype=torch.long, device=DEVICE)
    with pytest.raises(KernelUnavailableError, match="16"):
        step(zeros, zeros)


def test_tuning_picks_among_the_candidates(model: Text2Semantic) -> None:
    model.setup_caches(1, 64)
    result = tune_step(model, 1, slots=20, block_n=(2, 8), warps=(2,), splits=(1, 2), block_s=(16,))
    assert {c.block_n for c in result.gemv.values()} <= {2, 8}
    assert result.attention.splits in (1, 2)
    # 4 GEMV kinds x 2 shapes + 2 attention shapes x 2 combine shapes (+ on CUDA the
    # whole step with and without programmatic dependent launch)
    assert len(result.timings) == 4 * 2 + 2 * 2 + (2 if DEVICE.type == "cuda" else 0)
    assert all(t > 0 for _, _, t in result.timings)
    assert DEVICE.type == "cuda" or result.pdl is False  # no launch modes when interpreted
    step = result.step(model, 3)
    assert step.gemv_configs[(64, 64)] == result.gemv[(64, 64)] and step.pdl is result.pdl
    want_logits, _ = decode(model, model, steps=2)
    assert rel(decode(model, step, steps=2)[0], want_logits) < 1e-5


def test_tuning_tries_row_blocks_from_four_rows(model: Text2Semantic) -> None:
    """From ``ROW_BLOCK_MIN_BATCH`` rows the row-blocked GEMV is a candidate for every
    GEMV and for the attention's combining one; whichever wins computes the same."""
    from wyoming_sovits.kernels import ROW_BLOCK_MIN_BATCH

    assert ROW_BLOCK_MIN_BATCH == 4
    model.setup_caches(4, 64)
    result = tune_step(model, 4, slots=20, block_n=(8,), warps=(2,), splits=(2,),
                       block_s=(16,), row_blocks=(16, 32), row_block_n=(16,))  # fmt: skip
    blocked = [label for _, label, _ in result.timings if "batch rows 16" in label]
    # each GEMV kind and the combine once (``ROW_BLOCK_K``'s 512 capped at each width);
    # 32 is above 4 rows' 16
    assert len(blocked) == 4 + 1
    assert {c.block_k for c in result.gemv.values() if c.block_b > 1} <= {64, 256}
    assert not any("batch rows 32" in label for _, label, _ in result.timings)
    assert {c.block_b for c in result.gemv.values()} <= {1, 16}
    want_logits, _ = decode(model, model, steps=2)
    assert rel(decode(model, result.step(model, 3), steps=2)[0], want_logits) < 1e-5


def test_tuning_k_steps_are_capped_at_each_width(model: Text2Semantic) -> None:
    """Row-blocked K steps above a weight's width become one step of that width, each
    launch shape tried once: the 64-wide weights in steps of 16 or 64, the 256-wide ffn
    down in steps of 16, 64 or 256."""
    model.setup_caches(4, 64)
    result = tune_step(model, 4, slots=20, block_n=(8,), warps=(2,), splits=(2,),
                       block_s=(16,), row_blocks=(16,), row_block_n=(16,),
                       row_block_k=(16, 64, 512))  # fmt: skip
    blocked = [(kernel, label) for kernel, label, _ in result.timings if "batch rows" in label]
    assert len(blocked) == len(set(blocked)) == 3 * 2 + 3 + 2  # qkv, ffn up, logits; down; combine
    assert sum(kernel.endswith("64x256") for kernel, _ in blocked) == 3  # ffn down
    want_logits, _ = decode(model, model, steps=2)
    assert rel(decode(model, result.step(model, 3), steps=2)[0], want_logits) < 1e-5


def test_bucket_steps_take_shapes_from_one_row_and_the_whole_batch(model: Text2Semantic) -> None:
    """Below ``ROW_BLOCK_MIN_BATCH`` rows a bucket takes the one-row shapes; from there the
    whole batch's, with row blocks no taller than the bucket and every other field kept."""
    from wyoming_sovits.kernels import TuneResult, bucket_step

    shape = (192, 64)
    one = TuneResult({shape: GemvConfig(4, 2)}, AttentionConfig(1), [])
    whole = TuneResult({shape: GemvConfig(32, 8, 64, 512)}, AttentionConfig(1), [])
    assert bucket_step(model, 2, one, whole, False).gemv_configs[shape] == GemvConfig(4, 2)
    small = bucket_step(model, 16, one, whole, False).gemv_configs[shape]
    assert small == GemvConfig(32, 8, 16, 512)
    assert bucket_step(model, 64, one, whole, False).gemv_configs[shape] == whole.gemv[shape]


def test_a_launch_shape_the_gpu_cannot_run_is_skipped() -> None:
    """Triton refusing a candidate's shape (out of shared memory) times it as infinite;
    any other error is the tuner's to raise."""
    from wyoming_sovits.kernels import _candidate_time

    class OutOfResources(RuntimeError):  # named as Triton's
        pass

    def refused() -> None:
        raise OutOfResources("shared memory")

    def broken() -> None:
        raise ValueError("bad")

    assert math.isinf(_candidate_time(refused, torch.device("cpu")))
    with pytest.raises(ValueError):
        _candidate_time(broken, torch.device("cpu"))


def test_fused_step_in_the_runner_teacher_forced(model: Text2Semantic) -> None:
    """The graph runner's step (sampler, stop rule) around the fused forward."""
    packed = pack_inputs(ragged(1), CONFIG)
    forced = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(3))
    plain = T2SGraphRunner(model, 3, 64, max_new_tokens=16, use_graphs=False)
    want = plain.teacher_forced_logits(packed, forced)
    fused_runner = T2SGraphRunner(
        model, 3, 64, max_new_tokens=16, use_graphs=False, forward=FusedDecodeStep(model, 3)
    )
    got = fused_runner.teacher_forced_logits(packed, forced)
    assert rel(got, want) < 1e-5
    tokens = fused_runner.generate_batch(ragged(1), SamplingParams(top_k=1), max_new_tokens=12)
    again = plain.generate_batch(ragged(1), SamplingParams(top_k=1), max_new_tokens=12)
    assert [t.tolist() for t in tokens] == [t.tolist() for t in again]


def test_batch_beyond_the_buffers_is_refused(model: Text2Semantic) -> None:
    step = FusedDecodeStep(model, 1)
    model.setup_caches(2, 32)
    zeros = torch.zeros(2, dtype=torch.long, device=DEVICE)
    with pytest.raises(KernelUnavailableError, match="1 rows"):
        step(zeros, zeros)


def test_cpu_without_the_interpreter_is_refused(
    model: Text2Semantic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelUnavailableError, match="CUDA"):
        FusedDecodeStep(Text2Semantic(CONFIG), 1)


def test_pipeline_with_triton_kernels_speaks_the_same(tmp_path: Path) -> None:
    """``gpt_kernels="triton"`` (``serve --gpt-kernels triton``) changes speed, not output."""
    models = make_tiny_models_dir(tmp_path / "models")
    plain = load(models, DEVICE.type, fast=True)
    fused = Pipeline.load(
        models, DEVICE.type, "float32", cache_dir=None, fast=True, gpt_kernels="triton"
    )
    fused.max_new_tokens = plain.max_new_tokens
    prompt = plain.prepare_prompt(make_voice())
    want = np.concatenate(list(plain.synthesize(TEXT, prompt, GREEDY, stream=False)))
    got = np.concatenate(list(fused.synthesize(TEXT, prompt, GREEDY, stream=False)))
    from wyoming_sovits.kernels import FusedSampler

    assert not fused._runners and fused.max_concurrent == 1  # one stream, batched path
    batch = next(iter(fused._batchers.values()))
    # on CUDA a batch of the request's sentence rows, a step per row bucket; here one row
    if DEVICE.type == "cuda":
        assert isinstance(batch._forward, RowBucketSteps) and batch.buckets == (1, 4)
    else:
        assert isinstance(batch._forward, FusedDecodeStep) and batch.max_batch == 1
    assert isinstance(batch._sampler, FusedSampler)
    assert batch.run_ahead is (DEVICE.type == "cuda")  # one stream: queue a replay ahead
    np.testing.assert_allclose(got, want, atol=1e-4)
    # on a GPU the step's launch shapes were measured first (on the CPU: fixed defaults)
    from wyoming_sovits.pipeline import _TUNED

    assert bool(_TUNED) == (DEVICE.type == "cuda")
    # the default picks Triton for the fast path on CUDA only
    assert plain.gpt_kernels == "torch" and fused.gpt_kernels == "triton"
    auto = Pipeline.load(models, "cpu", "float32", cache_dir=None, fast=True)
    assert auto.gpt_kernels == "torch" and not auto._batching


THREE = "Good morning! How are you today? The kettle is on."


def _triton_pipeline(models: Path, sentence_rows: int, max_new_tokens: int) -> Pipeline:
    loaded = Pipeline.load(models, DEVICE.type, "float32", cache_dir=None, fast=True,
                           gpt_kernels="triton")  # fmt: skip
    loaded.max_new_tokens, loaded.sentence_rows = max_new_tokens, sentence_rows
    return loaded


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streaming"])
def test_sentences_side_by_side_speak_as_one_by_one(
    tmp_path: Path, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stream's sentences decoded side by side in the Triton batch (``sentence_rows``,
    on by default on CUDA) give the audio of decoding them one after another: each row's
    draws are keyed by the request's seed and its own step. Streaming, the later
    sentences are chunked like the first (``SENTENCE_LEAD`` 0: with it one by one decodes
    them once too), so that side by side, whose buffered tokens skip the decode points,
    decodes fewer times."""
    monkeypatch.setattr(pipeline_module, "SENTENCE_LEAD", 0.0)
    models = make_tiny_models_dir(tmp_path / "models")
    one_by_one, side_by_side = (_triton_pipeline(models, rows, 30) for rows in (1, 3))
    decodes = {id(one_by_one): 0, id(side_by_side): 0}
    for pipeline in (one_by_one, side_by_side):

        def counted(
            *args: object, _p: Pipeline = pipeline, _d: object = pipeline._decode
        ) -> object:
            decodes[id(_p)] += 1
            return _d(*args)  # type: ignore[operator]

        monkeypatch.setattr(pipeline, "_decode", counted)
    prompt = one_by_one.prepare_prompt(make_voice())
    want = list(one_by_one.synthesize(THREE, prompt, GREEDY, stream=stream))
    widths: list[int] = []
    call = RowBucketSteps.__call__

    def noting(
        self: RowBucketSteps, tokens: torch.Tensor, pos: torch.Tensor, kv_len: int | None = None
    ) -> torch.Tensor:
        widths.append(int(tokens.shape[0]))
        return call(self, tokens, pos, kv_len)

    monkeypatch.setattr(RowBucketSteps, "__call__", noting)
    got = list(side_by_side.synthesize(THREE, prompt, GREEDY, stream=stream))
    batch = next(iter(side_by_side._batchers.values()))
    assert batch.max_batch == 3 and batch.live_rows == 0  # every row given back
    assert 3 in widths and 1 in widths  # the later sentences ran beside the first
    # streaming, a sentence whose tokens are there when its turn comes is decoded at once,
    # not at each decode point (a streamed decode matches the whole one to the seams'
    # rounding)
    np.testing.assert_allclose(
        np.concatenate(got), np.concatenate(want), atol=1e-3 if stream else 1e-4
    )
    fewer = decodes[id(side_by_side)] < decodes[id(one_by_one)]
    assert fewer if stream else decodes[id(side_by_side)] == decodes[id(one_by_one)] == 3


def test_a_sentence_the_batch_is_too_small_for_waits_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later sentence needing more slots than the batch has while rows decode, or a row
    it has not got, is not opened side by side (that would fail it): it is opened in its
    turn, when the batch may grow, and the request speaks as one by one."""
    from wyoming_sovits.pipeline import BatchTooSmallError

    models = make_tiny_models_dir(tmp_path / "models")
    one_by_one, side_by_side = (_triton_pipeline(models, rows, 12) for rows in (1, 3))
    prompt = one_by_one.prepare_prompt(make_voice())
    want = list(one_by_one.synthesize(THREE, prompt, GREEDY, stream=False))
    # a batch built with one row has none to spare: each sentence waits for its turn
    one_by_one.sentence_rows = 3
    again = list(one_by_one.synthesize(THREE, prompt, GREEDY, stream=False))
    assert next(iter(one_by_one._batchers.values())).max_batch == 1
    np.testing.assert_allclose(np.concatenate(again), np.concatenate(want), atol=1e-4)
    plan = Pipeline._plan
    planned: list[int] = []  # ids of the sentences' features, in order
    refused: list[int] = []

    def small_batch(self: Pipeline, prompt: object, feats: object, cfg: object) -> object:
        if id(feats) not in planned:
            planned.append(id(feats))
        live = sum(b.live_rows for b in self._batchers.values())
        if live and planned.index(id(feats)) == 2:  # the third sentence, beside the others
            refused.append(live)
            raise BatchTooSmallError("a longer request needs a bigger batch")
        return plan(self, prompt, feats, cfg)  # type: ignore[arg-type]

    monkeypatch.setattr(Pipeline, "_plan", small_batch)
    got = list(side_by_side.synthesize(THREE, prompt, GREEDY, stream=False))
    assert refused  # the third sentence was refused a row beside the others
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-4)


def test_triton_failing_on_the_device_falls_back_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU whose Triton cannot build the kernels still speaks, on the PyTorch step."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("ptxas fatal: unsupported gpu architecture")

    monkeypatch.setattr(FusedDecodeStep, "__init__", broken)
    models = make_tiny_models_dir(tmp_path / "models")
    fused = Pipeline.load(
        models, DEVICE.type, "float32", cache_dir=None, fast=True, gpt_kernels="triton"
    )
    fused.max_new_tokens = 8
    prompt = fused.prepare_prompt(make_voice())
    with caplog.at_level("WARNING", logger="wyoming_sovits.pipeline"):
        audio = np.concatenate(list(fused.synthesize("Hello there.", prompt, GREEDY)))
    assert audio.size > 0
    assert "Triton GPT kernels failed" in caplog.text and "ptxas" in caplog.text
    batch = next(iter(fused._batchers.values()))
    assert batch._forward is batch.model and batch._sampler is None


def test_several_streams_batch_on_the_fused_step_and_sampler(tmp_path: Path) -> None:
    """With several streams the batch steps on the Triton step and sampler too, built for
    ``max_streams`` rows, one per row bucket (on a GPU tuned at one row and at the whole
    batch, the row-blocked GEMVs among the shapes)."""
    from wyoming_sovits.kernels import FusedSampler

    models = make_tiny_models_dir(tmp_path / "models")
    wide = Pipeline.load(models, DEVICE.type, "float32", cache_dir=None, fast=True,
                         gpt_kernels="triton", max_streams=2)  # fmt: skip
    forward, sampler = wide._batch_step(wide.gpt.model)
    assert isinstance(forward, RowBucketSteps) and forward.row_buckets == (1, 2)
    assert [forward.step_for(n).max_batch for n in (1, 2)] == [1, 2]
    assert isinstance(sampler, FusedSampler)
    with pytest.raises(KernelUnavailableError, match="built for 2 rows"):
        forward.step_for(3)


def test_gpt_kernels_option_is_checked() -> None:
    args = build_parser().parse_args(["serve", "--gpt-kernels", "triton"])
    assert args.gpt_kernels == "triton"
    assert build_parser().parse_args(["serve"]).gpt_kernels == "auto"
    assert ServerSettings().gpt_kernels == "auto"
    with pytest.raises(SettingsError, match="gpt_kernels"):
        ServerSettings(gpt_kernels="cuda")
    with pytest.raises(ValueError, match="gpt_kernels"):
        Pipeline.load(Path("/nonexistent"), "cpu", gpt_kernels="fast")


# -- the fused sampler --------------------------------------------------------------------


def _sampling_case(batch: int = 4, vocab: int = 65, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(batch, vocab, generator=g) * 3,
        "seen": torch.rand(batch, vocab, generator=g) < 0.3,
        "step": torch.tensor([0, 5, 11, 40][:batch]),
        "top_k": torch.tensor([1, 5, 15, 65][:batch]),
        "top_p": torch.tensor([[1.0], [0.8], [0.5], [0.95]][:batch]),
        "temperature": torch.tensor([[1.0], [0.7], [1.3], [1.0]][:batch]),
        "penalty": torch.tensor([[1.35], [1.0], [2.0], [1.35]][:batch]),
    }


def test_fused_sampler_filters_as_generate() -> None:
    from wyoming_sovits.generate import (
        EOS_BLOCKED_STEPS,
        RowParams,
        apply_repetition_penalty,
        filtered_probs,
    )
    from wyoming_sovits.kernels import FusedSampler

    case = {k: v.to(DEVICE) for k, v in _sampling_case().items()}
    vocab, eos = 65, 64
    sampler = FusedSampler(vocab, eos, EOS_BLOCKED_STEPS, 4, DEVICE)
    probs = torch.full((4, vocab), -1.0, device=DEVICE)
    token, stop = sampler(**case, any_top_p=True, probs_out=probs)
    barred = case["logits"].clone()
    barred[case["step"] < EOS_BLOCKED_STEPS, eos] = -math.inf
    rows = RowParams(case["top_k"], case["top_p"], case["temperature"], case["penalty"],
                     max_top_k=vocab, any_top_p=True)  # fmt: skip
    penalized = apply_repetition_penalty(barred, case["seen"], case["penalty"])
    want = filtered_probs(penalized, rows)
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    assert bool((probs[case["step"] < EOS_BLOCKED_STEPS, eos] == 0).all())
    assert token[0] == want[0].argmax()  # top_k 1 is greedy
    assert all(want[b, token[b]] > 0 for b in range(4))  # every draw inside the support
    wants_stop = (penalized.argmax(-1) == eos) | (token == eos)
    assert stop.tolist() == wants_stop.tolist()


@pytest.mark.parametrize("top_k", [3, 40, 100])
def test_fused_sampler_top_k_keeps_ties(top_k: int) -> None:
    """Logits on a coarse grid (many ties at the k-th value): the walk over distinct values
    (small k) and the sort (large k) keep what ``generate`` keeps, ties included."""
    from wyoming_sovits.generate import RowParams, filtered_probs
    from wyoming_sovits.kernels import FusedSampler

    g = torch.Generator().manual_seed(4)
    vocab = 130
    logits = (torch.randn(2, vocab, generator=g) * 2).round() / 2  # ~12 distinct values
    logits[1, 5:] = -math.inf  # fewer finite values than k: nothing more is dropped
    ones = torch.ones(2, 1)
    case = {
        "logits": logits,
        "seen": torch.zeros(2, vocab, dtype=torch.bool),
        "step": torch.full((2,), 50),
        "top_k": torch.full((2,), top_k),
        "top_p": ones,
        "temperature": ones,
        "penalty": ones,
    }
    case = {k: v.to(DEVICE) for k, v in case.items()}
    sampler = FusedSampler(vocab, vocab - 1, 0, 2, DEVICE)
    probs = torch.full((2, vocab), -1.0, device=DEVICE)
    sampler(**case, any_top_p=False, probs_out=probs)
    rows = RowParams(case["top_k"], case["top_p"], ones.to(DEVICE), ones.to(DEVICE),
                     max_top_k=vocab, any_top_p=False)  # fmt: skip
    want = filtered_probs(case["logits"], rows)
    torch.testing.assert_close(probs, want, rtol=1e-5, atol=1e-6)
    assert int((probs[0] > 0).sum()) >= top_k  # ties at the k-th value are all kept


def test_fused_sampler_draws_by_row_seed() -> None:
    """Same seed and step: the same draw, whatever the other rows; another seed differs."""
    from wyoming_sovits.kernels import FusedSampler

    case = {k: v.to(DEVICE) for k, v in _sampling_case(seed=1).items()}
    flat = {
        **case,
        "top_k": torch.full_like(case["top_k"], 65),
        "top_p": torch.ones_like(case["top_p"]),
    }
    sampler = FusedSampler(65, 64, 0, 4, DEVICE)
    draws = []
    for seed in range(12):
        sampler.seed.fill_(seed)
        draws.append(sampler(**flat, any_top_p=False)[0].clone())
    sampler.seed.fill_(3)
    again = sampler(**flat, any_top_p=False)[0]
    assert torch.equal(again, draws[3])
    assert len({int(d[3]) for d in draws}) > 5  # a flat-ish row really samples
    other = {k: v.clone() for k, v in flat.items()}
    other["logits"][0] = torch.randn(65, device=DEVICE)  # a different companion row
    assert sampler(**other, any_top_p=False)[0][3] == draws[3][3]


def test_batcher_with_fused_step_and_sampler_greedy() -> None:
    """Rows joining a running batch, Triton step and sampler: each row's greedy tokens
    are its single-run tokens (``generate``, the eager PyTorch loop)."""
    from test_t2s import TINY, request, tiny_model

    from wyoming_sovits.batching import ContinuousBatcher, drain
    from wyoming_sovits.generate import EOS_BLOCKED_STEPS, generate
    from wyoming_sovits.kernels import FusedSampler

    model = tiny_model(1).to(DEVICE)
    items = [request(5 + 3 * i, 4 + 5 * i, seed=10 + i) for i in range(3)]
    want = [
        generate(model, i.phone_ids.to(DEVICE), i.bert.to(DEVICE), i.prompt_tokens.to(DEVICE),
                 top_k=1, max_new_tokens=20).tolist()
        for i in items
    ]  # fmt: skip
    sampler = FusedSampler(TINY.vocab_size, TINY.eos, EOS_BLOCKED_STEPS, 2, DEVICE)
    step = FusedDecodeStep(model, 2)
    batch = ContinuousBatcher(model, 2, 96, max_new_tokens=24, kv_bucket=32,
                              forward=step, sampler=sampler, use_graphs=DEVICE.type == "cuda",
                              run_ahead=True)  # fmt: skip
    # the step writes its logits where the sampler reads them: no copy per step
    assert batch.state.logits.data_ptr() == step.logits.data_ptr()
    greedy = SamplingParams(top_k=1)
    first = drain(batch.open(items[0], greedy, 20, seed=1))
    got0 = next(first).tolist()  # row 0 runs ahead
    second = drain(batch.open(items[1], greedy, 20, seed=2))
    got1: list[int] = []
    for chunk in second:
        got1 += chunk.tolist()
        more = next(first, None)
        got0 += more.tolist() if more is not None else []
    got0 += [t for chunk in first for t in chunk.tolist()]
    third = [t for c in drain(batch.open(items[2], greedy, 20)) for t in c.tolist()]
    assert [got0, got1, third] == want
