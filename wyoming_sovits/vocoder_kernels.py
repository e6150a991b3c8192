"""Triton kernels for the vocoder's residual blocks: one launch per convolution.

A HiFi-GAN residual block pair is ``x = x + conv2(mask · lrelu(conv1(mask · lrelu(x))))``.
In PyTorch every step of it is a launch and a pass over the activations: the leaky ReLU,
the padding mask, cuDNN's convolution (which at 16 to 64 channels fills few of the tensor
cores' columns), the residual add, and at the end of each upsampling stage the sum of the
parallel blocks and its division. On an H200 at 64 rows x 96 latent frames those
elementwise passes were 48% of the vocoder's time, and cuDNN's convolutions ran at 308
TFLOP/s at 384 channels but 29 at 24 (bench/README, third session of 2026-12-03).

``conv_kernel`` computes one convolution of a block with all of that fused::

    out[b, t, :] = scale · (addend + residual[b, t, :] + bias
                            + sum_j lrelu(x[b, t + (j - (K - 1) / 2) · dilation, :]) · W_j)

where the input is read as zero outside ``[0, length_b)`` (the padding and the mask in
one), ``W_j`` is tap ``j``'s (C_in, C_out) matrix, products accumulate in float32 on the
tensor cores, and ``addend`` (the running sum of a stage's parallel blocks) and ``scale``
(1 / their count) finish the stage in the last block's last convolution. The activations
are (B, T, C) in memory: the vocoder's channels-last twin (``Generator.use_channels_last``)
holds them as (B, C, 1, T) tensors in channels-last memory, which is that layout.

Float32 activations multiply in full float32 (not TF32). The leaky ReLU is rounded to the
activation dtype before the product, as PyTorch's separate op stores it; the sum of bias,
residual and addend is rounded once at the end instead of after each add (differences of
one unit in the last place of fp16). Launch shapes are per channel count
(``DEFAULT_CONFIGS``, timed by ``bench/gpu_bench.py vconv``). Triton is imported lazily:
the package works without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import Tensor, nn

from .kernels import KernelUnavailableError, out_of_resources, triton_available

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvConfig:
    """One launch shape of ``conv_kernel``: output positions and channels per program, the
    input channels per product, warps and pipeline stages."""

    block_t: int = 64
    block_n: int = 64
    block_k: int = 64
    warps: int = 4
    stages: int = 2
    packed: bool = False  # the inner dimension over (tap, channel) pairs, not per tap

    def fit(self, c_in: int, c_out: int, taps: int) -> ConvConfig:
        """This shape with its channel blocks no wider than the convolution's channels
        (its taps x channels, packed) rounded up to a power of two (16 at least: the tensor
        cores' smallest product)."""
        inner = _pow2(c_in * taps if self.packed else c_in)
        return ConvConfig(
            self.block_t, min(self.block_n, _pow2(c_out)), min(self.block_k, inner),
            self.warps, self.stages, self.packed,
        )  # fmt: skip

    def smaller(self) -> ConvConfig | None:
        """The next launch shape to try where this one needs more shared memory than the
        GPU has: fewer pipeline stages, then narrower blocks; None below the smallest."""
        if self.stages > 1:
            return replace(self, stages=self.stages - 1)
        for name in ("block_n", "block_k", "block_t"):
            if getattr(self, name) > 16:
                return replace(self, **{name: getattr(self, name) // 2, "stages": 2})
        return None


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


# Default launch shapes per channel count (H200, fp16; bench/gpu_bench.py ``vconv`` times
# the candidates). Narrow stages are many positions per program; wide ones, wide blocks.
DEFAULT_CONFIGS: dict[int, ConvConfig] = {
    384: ConvConfig(64, 128, 64, 4, 3),
    192: ConvConfig(128, 256, 64, 8, 3),
    96: ConvConfig(64, 128, 32, 4, 4),
    48: ConvConfig(128, 64, 16, 4, 3),
    24: ConvConfig(256, 32, 32, 4, 3),
}

_KERNELS: dict[str, Any] = {}


def _kernels() -> dict[str, Any]:
    if _KERNELS:
        return _KERNELS
    if not triton_available():
        raise KernelUnavailableError("the fused vocoder needs Triton (pip install triton)")
    import triton
    import triton.language as tl

    # Triton would compile a variant per divisibility of each integer argument, and the
    # positions (frames x rate) vary by request: a compile would stall a request mid-way
    @triton.jit(do_not_specialize=["T", "K", "DIL"])
    def conv_kernel(x, w, bias, residual, addend, out, lengths, T, K, DIL, slope, scale,
                    C_IN: tl.constexpr, C_OUT: tl.constexpr, BLOCK_T: tl.constexpr,
                    BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                    HAS_RESIDUAL: tl.constexpr, HAS_ADDEND: tl.constexpr,
                    PACKED: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
        pid_t, pid_n, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_in = b.to(tl.int64) * T * C_IN
        row_out = b.to(tl.int64) * T * C_OUT
        limit = T
        if HAS_LENGTHS:
            limit = tl.minimum(tl.load(lengths + b), T)
        acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
        if PACKED:
            # the products' inner dimension runs over (tap, input channel) pairs, packed:
            # narrow stages fill whole tiles instead of padding each tap's channels
            width = K * C_IN
            for k0 in range(0, width, BLOCK_K):
                q = k0 + tl.arange(0, BLOCK_K)
                src = t[:, None] + (q[None, :] // C_IN - (K - 1) // 2) * DIL
                inside = (src >= 0) & (src < limit) & (q[None, :] < width)
                v = tl.load(x + row_in + src * C_IN + (q % C_IN)[None, :], mask=inside,
                            other=0.0)  # fmt: skip
                v32 = v.to(tl.float32)
                v = tl.where(v32 > 0, v32, v32 * slope).to(v.dtype)
                wv = tl.load(w + q[:, None] * C_OUT + n[None, :],
                             mask=(q[:, None] < width) & (n[None, :] < C_OUT), other=0.0)  # fmt: skip
                acc = tl.dot(v, wv, acc, input_precision=PRECISION)
        else:
            # one loop over (tap, input-channel block): the pipeline holds one tile a stage
            k_blocks: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
            for step in range(K * k_blocks):
                j = step // k_blocks
                c = (step % k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
                src1 = t + (j - (K - 1) // 2) * DIL
                inside1 = (src1 >= 0) & (src1 < limit)
                v = tl.load(x + row_in + src1[:, None] * C_IN + c[None, :],
                            mask=inside1[:, None] & (c[None, :] < C_IN), other=0.0)  # fmt: skip
                v32 = v.to(tl.float32)
                v = tl.where(v32 > 0, v32, v32 * slope).to(v.dtype)
                wv = tl.load(w + (j * C_IN + c[:, None]) * C_OUT + n[None, :],
                             mask=(c[:, None] < C_IN) & (n[None, :] < C_OUT), other=0.0)  # fmt: skip
                acc = tl.dot(v, wv, acc, input_precision=PRECISION)
        acc += tl.load(bias + n, mask=n < C_OUT, other=0.0).to(tl.float32)[None, :]
        here = row_out + t[:, None] * C_OUT + n[None, :]
        keep = (t[:, None] < T) & (n[None, :] < C_OUT)
        if HAS_RESIDUAL:
            acc += tl.load(residual + here, mask=keep, other=0.0).to(tl.float32)
        if HAS_ADDEND:
            acc += tl.load(addend + here, mask=keep, other=0.0).to(tl.float32)
        acc = acc * scale
        tl.store(out + here, acc.to(out.dtype.element_ty), mask=keep)

    _KERNELS.update(conv=conv_kernel, cdiv=triton.cdiv)
    return _KERNELS


def _check_device(t: Tensor) -> None:
    if t.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise KernelUnavailableError(
            f"the fused vocoder runs on CUDA (or under TRITON_INTERPRET=1), not on {t.device}"
        )


def taps(conv: nn.Module) -> Tensor:
    """A convolution's weight (C_out, C_in, [1,] K) as ``conv_kernel`` reads it:
    (K, C_in, C_out), contiguous."""
    weight = cast(Tensor, conv.weight).detach()
    if weight.ndim == 4:
        weight = weight.squeeze(2)
    return weight.permute(2, 1, 0).contiguous()


def _bias(conv: nn.Module) -> Tensor:
    return cast(Tensor, conv.bias).detach()


def lrelu_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    dilation: int,
    slope: float,
    lengths: Tensor | None = None,
    residual: Tensor | None = None,
    addend: Tensor | None = None,
    scale: float = 1.0,
    config: ConvConfig | None = None,
) -> Tensor:
    """``scale · (addend + residual + conv(lrelu(x) masked past lengths))`` for activations
    (B, T, C) in memory: (B, C, 1, T) channels-last tensors or contiguous (B, T, C) ones.
    ``weight`` is ``taps``' (K, C_in, C_out); the output has ``x``'s layout, C_out channels."""
    _check_device(x)
    k, c_in, c_out = weight.shape
    if k % 2 == 0:
        raise KernelUnavailableError(f"the fused convolution needs an odd kernel, not {k}")
    rows, positions = x.shape[0], x.shape[-1] if x.ndim == 4 else x.shape[1]
    cfg = (config or DEFAULT_CONFIGS.get(c_in) or ConvConfig()).fit(c_in, c_out, k)
    if x.ndim == 4:  # (B, C, 1, T), channels last
        out = torch.empty(rows, c_out, 1, positions, dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)  # fmt: skip
    else:
        out = x.new_empty(rows, positions, c_out)
    kernels = _kernels()
    kernel, cdiv = kernels["conv"], kernels["cdiv"]
    grid = (cdiv(positions, cfg.block_t), cdiv(c_out, cfg.block_n), rows)
    dummy = x
    kernel[grid](
        x, weight, bias, residual if residual is not None else dummy,
        addend if addend is not None else dummy, out,
        lengths if lengths is not None else bias, positions, k, dilation, slope, scale,
        C_IN=c_in, C_OUT=c_out, BLOCK_T=cfg.block_t, BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k, HAS_LENGTHS=lengths is not None,
        HAS_RESIDUAL=residual is not None, HAS_ADDEND=addend is not None, PACKED=cfg.packed,
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        num_warps=cfg.warps, num_stages=cfg.stages,
    )  # fmt: skip
    return out


class FusedResBlocks:
    """One upsampling stage's parallel residual blocks (``vits_modules.ResBlock``) through
    ``lrelu_conv``: two launches per dilation, the stage's average in the last one.

    ``blocks`` are the channels-last twin's blocks (2-D convolutions) or plain ones; their
    weights are copied into the kernel's layout once."""

    def __init__(
        self, blocks: Sequence[nn.Module], slope: float, config: ConvConfig | None = None
    ) -> None:
        self.slope = slope
        self.pairs: list[list[tuple[Tensor, Tensor, int, Tensor, Tensor]]] = []
        for block in blocks:
            pairs = []
            convs1, convs2 = cast(nn.ModuleList, block.convs1), cast(nn.ModuleList, block.convs2)
            for c1, c2 in zip(convs1, convs2, strict=True):
                dilation = int(cast(nn.Conv2d | nn.Conv1d, c1).dilation[-1])
                pairs.append((taps(c1), _bias(c1), dilation, taps(c2), _bias(c2)))
            self.pairs.append(pairs)
        self.config = config

    def __call__(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """The stage's output: the mean of its blocks applied to ``x``. A launch shape the
        GPU cannot hold (shared memory: consumer cards have less than the H200 the defaults
        were timed on) is replaced by ``ConvConfig.smaller`` ones until one runs."""
        while True:
            try:
                return self._run(x, lengths)
            except Exception as exc:
                if not out_of_resources(exc):
                    raise
                config = (self.config or ConvConfig()).smaller()
                if config is None:
                    raise KernelUnavailableError(f"no launch shape fits this GPU: {exc}") from exc
                _LOGGER.info("Vocoder kernels: %s does not fit this GPU, trying %s",
                             self.config, config)  # fmt: skip
                self.config = config

    def _run(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        total: Tensor | None = None
        last = len(self.pairs) - 1
        for i, pairs in enumerate(self.pairs):
            y = x
            for p, (w1, b1, d1, w2, b2) in enumerate(pairs):
                h = lrelu_conv(y, w1, b1, d1, self.slope, lengths, config=self.config)
                final = p == len(pairs) - 1
                y = lrelu_conv(
                    h, w2, b2, 1, self.slope, lengths, residual=y,
                    addend=total if final else None,
                    scale=1.0 / len(self.pairs) if final and i == last else 1.0,
                    config=self.config,
                )  # fmt: skip
            total = y
        assert total is not None
        return total
