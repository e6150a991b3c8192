"""The fused vocoder convolutions (``vocoder_kernels``) compute the residual blocks' function.

CI runs them under Triton's interpreter (``conftest.py`` sets ``TRITON_INTERPRET=1``), on a
tiny vocoder whose channel counts are not powers of two (the official ones are 384 down to
24), with and without per-row lengths. The full-size vocoder's timings and its difference
from cuDNN's in fp16 are in ``bench/gpu_bench.py vconv``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
import torch

import wyoming_sovits.vocoder_kernels as vk
from wyoming_sovits.kernels import KernelUnavailableError
from wyoming_sovits.models.vits_modules import Generator
from wyoming_sovits.vocoder_kernels import ConvConfig

DEVICE = torch.device("cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")
# channels 24 -> 12 -> 6 through three stages: padded blocks in every one
CONFIGS = {24: ConvConfig(32, 16, 32), 12: ConvConfig(64, 16, 16), 6: ConvConfig(64, 16, 16)}


def vocoder() -> Generator:
    torch.manual_seed(0)
    g = Generator(8, [3, 5], [[1, 3], [1, 2]], [4, 2, 2], 48, [8, 4, 4], 16).eval().to(DEVICE)
    g.use_channels_last(min_rows=1)
    return g


def inputs(rows: int = 3, frames: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, 8, frames, generator=g)
    ge = torch.randn(rows, 16, 1, generator=g)
    lengths = torch.tensor([frames, frames - 2, 3])[:rows]
    return x.to(DEVICE), ge.to(DEVICE), lengths.to(DEVICE)


@pytest.mark.parametrize("packed", [False, True])
def test_fused_residual_blocks_match_the_cudnn_ones(packed: bool) -> None:
    g = vocoder()
    x, ge, lengths = inputs()
    configs = {c: ConvConfig(cfg.block_t, cfg.block_n, cfg.block_k, packed=packed)
               for c, cfg in CONFIGS.items()}  # fmt: skip
    with torch.no_grad():
        plain_masked, plain = g(x, ge, lengths), g(x, ge)
        g.use_fused_resblocks(configs)
        assert g.fused_resblocks
        fused_masked, fused = g(x, ge, lengths), g(x, ge)
    assert fused.shape == plain.shape == (3, 1, 9 * 16)
    assert (fused_masked - plain_masked).abs().max() < 1e-5
    assert (fused - plain).abs().max() < 1e-5
    # the lengths matter: a row cut short is its own exact-length decode, not the padded one
    assert (fused_masked[1] - fused[1]).abs().max() > 1e-3
    with torch.no_grad():
        alone = g(x[1:2, :, :7], ge[1:2])
    assert (fused_masked[1, :, : 7 * 16] - alone[0]).abs().max() < 1e-5


def test_stages_without_a_launch_shape_keep_cudnn() -> None:
    g = vocoder()
    x, ge, lengths = inputs()
    with torch.no_grad():
        plain = g(x, ge, lengths)
        g.use_fused_resblocks({12: CONFIGS[12]}, check=False)
        twin = g._twin[0]
        assert [stage is not None for stage in twin._fused] == [False, True, False]
        mixed = g(x, ge, lengths)
        g.use_plain_resblocks()
        assert not g.fused_resblocks
        again = g(x, ge, lengths)
    assert (mixed - plain).abs().max() < 1e-5
    assert torch.equal(again, plain)
    # no channel count of this vocoder in the table: nothing is fused
    g.use_fused_resblocks({999: ConvConfig()}, check=False)
    assert not g.fused_resblocks


def test_fused_blocks_need_the_channels_last_twin() -> None:
    torch.manual_seed(0)
    g = Generator(8, [3], [[1]], [2], 16, [4], 16)
    with pytest.raises(RuntimeError, match="use_channels_last"):
        g.use_fused_resblocks()


class OutOfResources(Exception):  # Triton's error is matched by its class name
    pass


def test_a_launch_shape_too_big_for_the_gpu_shrinks_until_one_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Consumer cards have less shared memory than the H200 the defaults were timed on:
    the stage retries with smaller shapes, and the audio is the same."""
    g = vocoder()
    x, ge, lengths = inputs()
    with torch.no_grad():
        plain = g(x, ge, lengths)
    real_conv = vk._kernels()["conv"]
    launches: list[int] = []

    class Launcher:
        def __getitem__(self, grid: Any) -> Any:
            def launch(*args: Any, **kwargs: Any) -> None:
                launches.append(kwargs["BLOCK_T"])
                if kwargs["BLOCK_T"] > 16 or kwargs["num_stages"] > 1:
                    raise OutOfResources("out of resource: shared memory")
                real_conv[grid](*args, **kwargs)

            return launch

    monkeypatch.setitem(vk._KERNELS, "conv", Launcher())
    g.use_fused_resblocks({12: ConvConfig(64, 16, 16, 4, 3)}, check=False)
    with caplog.at_level(logging.INFO, logger="wyoming_sovits.vocoder_kernels"), torch.no_grad():
        fused = g(x, ge, lengths)
    stage = g._twin[0]._fused[1]
    assert isinstance(stage, vk.FusedResBlocks)
    assert stage.config == ConvConfig(16, 16, 16, 4, 1)
    assert "does not fit this GPU" in caplog.text
    assert (fused - plain).abs().max() < 1e-5
    # once a shape runs, the stage keeps it
    launches.clear()
    with torch.no_grad():
        g(x, ge, lengths)
    assert set(launches) == {16}
    # nothing fits: a named error, not a loop
    monkeypatch.setitem(vk._KERNELS, "conv", _failing(OutOfResources("out of resource")))
    g.use_fused_resblocks({12: ConvConfig(32, 16, 16, 4, 2)}, check=False)
    with pytest.raises(KernelUnavailableError, match="no launch shape fits"), torch.no_grad():
        g(x, ge, lengths)


def _failing(error: Exception) -> Any:
    class Launcher:
        def __getitem__(self, grid: Any) -> Any:
            def launch(*args: Any, **kwargs: Any) -> None:
                raise error

            return launch

    return Launcher()


@pytest.mark.parametrize("failure", ["no shape fits", "compile error", "wrong output"])
def test_a_stage_the_gpu_cannot_run_keeps_cudnn(
    failure: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``use_fused_resblocks`` tries each stage against cuDNN's first: a GPU Triton cannot
    build for, or kernels whose output differs, leave that stage as it was, with a warning;
    the vocoder still speaks."""
    g = vocoder()
    x, ge, lengths = inputs()
    with torch.no_grad():
        plain = g(x, ge, lengths)
    real_conv = vk._kernels()["conv"]
    if failure == "wrong output":

        class Launcher:
            def __getitem__(self, grid: Any) -> Any:
                def launch(*args: Any, **kwargs: Any) -> None:
                    real_conv[grid](*args, **kwargs)
                    args[5].add_(1.0)  # the output

                return launch

        monkeypatch.setitem(vk._KERNELS, "conv", Launcher())
    else:
        error = OutOfResources("shared memory") if failure == "no shape fits" else RuntimeError(
            "PassManager::run failed"
        )  # fmt: skip
        monkeypatch.setitem(vk._KERNELS, "conv", _failing(error))
    with caplog.at_level(logging.WARNING, logger="wyoming_sovits.models.vits_modules"):
        g.use_fused_resblocks({12: CONFIGS[12]})
    assert not g.fused_resblocks
    assert "Vocoder stage 1 (12 channels) keeps cuDNN's convolutions" in caplog.text
    reason = {"no shape fits": "no launch shape fits", "compile error": "PassManager",
              "wrong output": "differs from cuDNN's"}[failure]  # fmt: skip
    assert reason in caplog.text
    with torch.no_grad():
        assert torch.equal(g(x, ge, lengths), plain)


def test_smaller_shapes_end() -> None:
    config: ConvConfig | None = ConvConfig(128, 64, 32, 8, 3, packed=True)
    seen = []
    while config is not None:
        seen.append(config)
        config = config.smaller()
    assert seen[-1] == ConvConfig(16, 16, 16, 8, 1, packed=True)
    assert len(seen) == len(set(seen)) < 40


def test_fit_clamps_blocks_to_the_channels() -> None:
    assert ConvConfig(256, 128, 64).fit(24, 24, 3) == ConvConfig(256, 32, 32)
    assert ConvConfig(256, 128, 128, packed=True).fit(24, 24, 3) == ConvConfig(
        256, 32, 128, packed=True
    )
    assert ConvConfig(64, 64, 64).fit(6, 6, 5) == ConvConfig(64, 16, 16)
