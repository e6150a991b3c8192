"""The fused Triton decode step computes ``Text2Semantic.forward``'s function.

CI has no GPU, so the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set
by ``conftest.py`` before anything imports Triton), which executes the same kernel code on
CPU tensors with NumPy; on a GPU machine the same tests run compiled, on CUDA. Tiny models
keep it to seconds; the full-size comparison against the fp32 path (200 teacher-forced
steps) is in ``bench/gpu_bench.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pipeline_fast import GREEDY, TEXT, load, make_voice
from tiny_frontends import make_tiny_models_dir

from wyoming_sovits.__main__ import build_parser
from wyoming_sovits.fast import T2SGraphRunner
from wyoming_sovits.generate import SamplingParams
from wyoming_sovits.kernels import FusedDecodeStep, KernelUnavailableError
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
    runner = next(iter(fused._runners.values()))
    assert isinstance(runner._forward, FusedDecodeStep)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_gpt_kernels_option_is_checked() -> None:
    args = build_parser().parse_args(["serve", "--gpt-kernels", "triton"])
    assert args.gpt_kernels == "triton"
    with pytest.raises(SettingsError, match="gpt_kernels"):
        ServerSettings(gpt_kernels="cuda")
    with pytest.raises(ValueError, match="gpt_kernels"):
        Pipeline.load(Path("/nonexistent"), "cpu", gpt_kernels="fast")
