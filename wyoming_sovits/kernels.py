"""Fused Triton kernels for the GPT decode step: five launches per layer instead of ~17.

The unfused step (``Text2Semantic.forward``) is launch-bound on a GPU: at batch 1 every
matrix is a GEMV of at most 2 MB, and each of its ~400 kernels costs a few microseconds
whatever it computes. This step computes the same function with

    embed                         token embedding + alpha · sine position        (1 launch)
    per layer:
      qkv     = LN2'(x1 + f) · Wqkv + b   the previous layer's second LayerNorm is the
                                           prologue (layer 0 reads the embedding)
      attn    = cache write of k, v + online-softmax attention, each head split over
                the sequence (partial max, denominator, numerator per split)
      a       = combine(attn) · Wo + b     the splits are combined in the GEMV's prologue
      h       = relu(LN1(y + a) · W1 + b)  the first LayerNorm is the prologue
      f       = h · W2 + b
    logits  = LN2(x1 + f) · Wpred        (float32 out)

Each GEMV program recomputes the 512-wide LayerNorm of its input (cheap) instead of a
separate normalisation launch; program 0 of each row also stores the normalised vector,
which is the residual the next LayerNorm needs. Normalised vectors are rounded to the
model dtype before the product, as the unfused path stores them; accumulation is float32.

With many rows a GEMV program multiplies a block of rows on the tensor cores
(``gemm_kernel``), a weight up to 512 wide in one K step. Launch shapes (rows per GEMV
program, batch rows, K step, warps, sequence splits) are per weight shape;
``tune_step`` times the candidates on the GPU at hand and the pipeline uses its choice.
``FusedSampler`` is the matching one-launch sampler; its ``step_rows`` also does the
continuous batch's per-step bookkeeping, so a batch step is 1 + 5 · n_layer + 1 + 1
launches plus the logits copy.

The step has the fixed-shape ``forward(tokens, input_pos, kv_len=None) -> logits``
contract of ``Text2Semantic.forward`` (``kv_len`` is not needed: attention loops to each
row's own position), so ``fast.T2SGraphRunner(model, forward=FusedDecodeStep(model, B))``
captures it in a CUDA graph. Triton is imported lazily: the package works without it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor

from .batching import bucket_for
from .fast import capturing
from .models.t2s import Block, Text2Semantic

_LOGGER = logging.getLogger(__name__)


class KernelUnavailableError(RuntimeError):
    """Triton (or a CUDA device for it) is missing, or the model has a shape it does not serve."""


def triton_available() -> bool:
    """True when Triton can be imported (it ships with CUDA builds of PyTorch)."""
    return importlib.util.find_spec("triton") is not None


_KERNELS: dict[str, Any] = {}


def _kernels() -> dict[str, Any]:
    """Compile-on-first-use: define the Triton kernels once per process."""
    if _KERNELS:
        return _KERNELS
    if not triton_available():
        raise KernelUnavailableError("the fused decode step needs Triton (pip install triton)")
    import triton
    import triton.language as tl
    from triton.language.extra import cuda as tl_cuda

    @triton.jit
    def embed_kernel(tok, pos, audio_start, emb, pe, alpha, out, D: tl.constexpr,
                     PDL: tl.constexpr):  # fmt: skip
        b = tl.program_id(0)
        d = tl.arange(0, D)
        if PDL:  # programmatic dependent launch: see ``FusedDecodeStep``
            tl_cuda.gdc_launch_dependents()
            tl_cuda.gdc_wait()
        t = tl.load(tok + b)
        # a parked row (slot 0, before its audio) must not read before the table
        p = tl.maximum(tl.load(pos + b) - tl.load(audio_start + b), 0)
        x = tl.load(emb + t * D + d).to(tl.float32)
        x += tl.load(alpha).to(tl.float32) * tl.load(pe + p * D + d).to(tl.float32)
        tl.store(out + b * D + d, x.to(out.dtype.element_ty))

    @triton.jit
    def gemv_kernel(
        xa, xb, ln_w, ln_b, w, bias, out, x_out, N, K, eps,
        MODE: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DH: tl.constexpr, SPLITS: tl.constexpr,
        PDL: tl.constexpr,
    ):  # fmt: skip
        # out[b, n] = act(W[n, :] · v + bias[n]) where v is, by MODE:
        #   0  xa[b]                                   (K may span several blocks)
        #   1  LN(xa[b] + xb[b]), also stored to x_out (K == BLOCK_K)
        #   2  the attention output combined from SPLITS partial softmaxes per head:
        #      xa = running max (B, H, S), xb = denominators (B, H, S), ln_w = partial
        #      numerators (B, H, S, DH); K == BLOCK_K == H · DH
        pid = tl.program_id(0)
        b = tl.program_id(1)
        n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        k = tl.arange(0, BLOCK_K)
        # the weight tile is issued first: its latency overlaps the prologue's arithmetic
        tile = tl.load(w + n[:, None] * K + k[None, :], mask=n_ok[:, None] & (k < K)[None, :],
                       other=0.0)  # fmt: skip
        if HAS_BIAS:
            bias_n = tl.load(bias + n, mask=n_ok, other=0.0).to(tl.float32)
        if PDL:  # the weights are constant: only the activations wait for the last kernel
            tl_cuda.gdc_launch_dependents()
            tl_cuda.gdc_wait()
        if MODE == 1:
            s = tl.load(xa + b * K + k).to(tl.float32) + tl.load(xb + b * K + k).to(tl.float32)
            mean = tl.sum(s, 0) / K
            centred = s - mean
            rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 0) / K + eps)
            v = centred * rstd * tl.load(ln_w + k).to(tl.float32) + tl.load(ln_b + k).to(tl.float32)
            v_stored = v.to(x_out.dtype.element_ty)
            if pid == 0:
                tl.store(x_out + b * K + k, v_stored)
            acc = tl.sum(tile.to(tl.float32) * v_stored.to(tl.float32)[None, :], 1)
        elif MODE == 2:
            split = tl.arange(0, SPLITS)
            part = (b * (K // DH) + k // DH)[:, None] * SPLITS + split[None, :]  # (K, S)
            m = tl.load(xa + part)
            m_top = tl.max(m, 1)
            weight = tl.exp(m - m_top[:, None])
            denom = tl.sum(weight * tl.load(xb + part), 1)
            numer = tl.sum(weight * tl.load(ln_w + part * DH + (k % DH)[:, None]), 1)
            v = (numer / denom).to(x_out.dtype.element_ty).to(tl.float32)
            acc = tl.sum(tile.to(tl.float32) * v[None, :], 1)
        else:
            v = tl.load(xa + b * K + k, mask=k < K, other=0.0).to(tl.float32)
            acc = tl.sum(tile.to(tl.float32) * v[None, :], 1)
            for k0 in range(BLOCK_K, K, BLOCK_K):
                kk = k0 + k
                tile = tl.load(w + n[:, None] * K + kk[None, :],
                               mask=n_ok[:, None] & (kk < K)[None, :], other=0.0)  # fmt: skip
                v = tl.load(xa + b * K + kk, mask=kk < K, other=0.0).to(tl.float32)
                acc += tl.sum(tile.to(tl.float32) * v[None, :], 1)
        if HAS_BIAS:
            acc += bias_n
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(out + b * N + n, acc.to(out.dtype.element_ty), mask=n_ok)

    @triton.jit
    def gemm_kernel(
        xa, xb, ln_w, ln_b, w, bias, out, x_out, B, N, K, eps,
        MODE: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DH: tl.constexpr, SPLITS: tl.constexpr, IEEE: tl.constexpr, PREFETCH: tl.constexpr,
        PDL: tl.constexpr, ONE_K: tl.constexpr,
    ):  # fmt: skip
        # ``gemv_kernel``'s product for BLOCK_B rows at once: each weight tile is read once
        # per block of rows (not once per row) and multiplied on the tensor cores. The
        # prologue's vector v (MODE 0, 1, 2 as there) is built per K block; MODE 1 first
        # takes each row's LayerNorm statistics over the whole row. The first weight tile
        # is issued before the wait for the kernel before (as in ``gemv_kernel``);
        # PREFETCH: each step issues the next tile's load before its own product.
        # ONE_K (BLOCK_K >= K): one K block, so MODE 1 reads its rows once and takes the
        # statistics from those registers; no chain of dependent loads.
        pid = tl.program_id(0)
        b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
        n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        b_ok, n_ok = b < B, n < N
        k = tl.arange(0, BLOCK_K)
        rows = b_ok[:, None]
        tile = tl.load(w + n[:, None] * K + k[None, :], mask=n_ok[:, None], other=0.0)
        if HAS_BIAS:
            bias_n = tl.load(bias + n, mask=n_ok, other=0.0).to(tl.float32)
        if PDL:
            tl_cuda.gdc_launch_dependents()
            tl_cuda.gdc_wait()
        if MODE == 1 and not ONE_K:
            total = tl.zeros((BLOCK_B,), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                at = b[:, None] * K + k0 + k[None, :]
                s = tl.load(xa + at, mask=rows, other=0.0).to(tl.float32)
                total += tl.sum(s + tl.load(xb + at, mask=rows, other=0.0).to(tl.float32), 1)
            mean = total / K
            spread = tl.zeros((BLOCK_B,), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                at = b[:, None] * K + k0 + k[None, :]
                s = tl.load(xa + at, mask=rows, other=0.0).to(tl.float32)
                s += tl.load(xb + at, mask=rows, other=0.0).to(tl.float32)
                centred = s - mean[:, None]
                spread += tl.sum(centred * centred, 1)
            rstd = 1.0 / tl.sqrt(spread / K + eps)
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + k
            if PREFETCH:
                ahead = kk + BLOCK_K
                following = tl.load(w + n[:, None] * K + ahead[None, :],
                                    mask=n_ok[:, None] & (ahead < K)[None, :], other=0.0)  # fmt: skip
            elif k0 > 0:
                tile = tl.load(w + n[:, None] * K + kk[None, :], mask=n_ok[:, None], other=0.0)
            if MODE == 1:
                at = b[:, None] * K + kk[None, :]
                s = tl.load(xa + at, mask=rows, other=0.0).to(tl.float32)
                s += tl.load(xb + at, mask=rows, other=0.0).to(tl.float32)
                if ONE_K:
                    mean = tl.sum(s, 1) / K
                    centred = s - mean[:, None]
                    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 1) / K + eps)
                v = (s - mean[:, None]) * rstd[:, None] * tl.load(ln_w + kk).to(tl.float32)[None, :]
                v = (v + tl.load(ln_b + kk).to(tl.float32)[None, :]).to(x_out.dtype.element_ty)
                if pid == 0:
                    tl.store(x_out + at, v, mask=rows)
            elif MODE == 2:
                head = (b[:, None] * (K // DH) + (kk // DH)[None, :]) * SPLITS  # (BB, BK)
                m_top = tl.full((BLOCK_B, BLOCK_K), -float("inf"), tl.float32)
                for sp in range(SPLITS):
                    m_top = tl.maximum(m_top, tl.load(xa + head + sp, mask=rows, other=0.0))
                numer = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
                denom = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
                for sp in range(SPLITS):
                    weight = tl.exp(tl.load(xa + head + sp, mask=rows, other=0.0) - m_top)
                    denom += weight * tl.load(xb + head + sp, mask=rows, other=1.0)
                    part = (head + sp) * DH + (kk % DH)[None, :]
                    numer += weight * tl.load(ln_w + part, mask=rows, other=0.0)
                v = (numer / denom).to(x_out.dtype.element_ty)
            else:
                v = tl.load(xa + b[:, None] * K + kk[None, :], mask=rows, other=0.0)
            if IEEE:
                acc += tl.dot(v, tl.trans(tile), input_precision="ieee")
            else:
                acc += tl.dot(v, tl.trans(tile))
            if PREFETCH:
                tile = following
        if HAS_BIAS:
            acc += bias_n[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(out + b[:, None] * N + n[None, :], acc.to(out.dtype.element_ty),
                 mask=rows & n_ok[None, :])  # fmt: skip

    @triton.jit
    def attention_kernel(
        qkv, k_cache, v_cache, part_m, part_l, part_acc, pos, row_start, stride_b, stride_h,
        scale, D: tl.constexpr, DH: tl.constexpr, BLOCK_S: tl.constexpr, SPLITS: tl.constexpr,
        PDL: tl.constexpr,
    ):  # fmt: skip
        # One (row, head, split) of split-sequence decode attention. Split 0 writes this
        # step's k, v at the row's slot and counts the new key; every split attends over
        # its share of slots [row_start, pos) and stores its running max, denominator and
        # unnormalised numerator; the out-projection GEMV (MODE 2) combines the splits.
        b = tl.program_id(0)
        h = tl.program_id(1)
        sp = tl.program_id(2)
        d = tl.arange(0, DH)
        if PDL:
            tl_cuda.gdc_launch_dependents()
            tl_cuda.gdc_wait()
        p = tl.load(pos + b)
        start = tl.load(row_start + b)
        base = qkv + b * 3 * D + h * DH
        q = tl.load(base + d).to(tl.float32)
        head = b * stride_b + h * stride_h
        share = tl.cdiv(tl.cdiv(p - start, SPLITS), BLOCK_S) * BLOCK_S
        lo = start + sp * share
        hi = tl.minimum(lo + share, p)
        if sp == 0:
            k_new = tl.load(base + D + d)
            v_new = tl.load(base + 2 * D + d)
            tl.store(k_cache + head + p * DH + d, k_new)
            tl.store(v_cache + head + p * DH + d, v_new)
            m = tl.sum(q * k_new.to(tl.float32), 0) * scale
            denom = tl.full((), 1.0, tl.float32)
            acc = v_new.to(tl.float32)
        else:
            m = tl.full((), -float("inf"), tl.float32)
            denom = tl.full((), 0.0, tl.float32)
            acc = tl.zeros((DH,), dtype=tl.float32)
        for s0 in range(lo, hi, BLOCK_S):
            j = s0 + tl.arange(0, BLOCK_S)
            ok = j < hi
            kt = tl.load(k_cache + head + j[:, None] * DH + d[None, :], mask=ok[:, None], other=0.0)
            vt = tl.load(v_cache + head + j[:, None] * DH + d[None, :], mask=ok[:, None], other=0.0)
            score = tl.sum(kt.to(tl.float32) * q[None, :], 1) * scale
            score = tl.where(ok, score, -float("inf"))
            m_new = tl.maximum(m, tl.max(score, 0))
            keep = tl.exp(m - m_new)
            weight = tl.exp(score - m_new)
            acc = acc * keep + tl.sum(weight[:, None] * vt.to(tl.float32), 0)
            denom = denom * keep + tl.sum(weight, 0)
            m = m_new
        slot = (b * tl.num_programs(1) + h) * SPLITS + sp
        tl.store(part_m + slot, m)
        tl.store(part_l + slot, denom)
        tl.store(part_acc + slot * DH + d, acc)

    @triton.jit
    def sample_kernel(
        logits, seen, step, seed, top_k, top_p, temperature, penalty, token_out, stop_out,
        probs_out, V, EOS, EOS_STEPS,
        active, limit, report, input_pos, last_slot, pos_out, column, report_stride,
        ANY_TOP_P: tl.constexpr, WRITE_PROBS: tl.constexpr, BLOCK: tl.constexpr,
        BOOKKEEP: tl.constexpr, LAST: tl.constexpr, PDL: tl.constexpr,
        TOPK_WALK: tl.constexpr = 64,
    ):  # fmt: skip
        # One row: EOS bar, repetition penalty, top-p, temperature, top-k, softmax, then
        # the exponential race argmax(p / E) with E = -log(U), U from (seed, step) Philox.
        b = tl.program_id(0)
        i = tl.arange(0, BLOCK)
        ok = i < V
        if PDL:
            tl_cuda.gdc_launch_dependents()
            tl_cuda.gdc_wait()
        x = tl.load(logits + b * V + i, mask=ok, other=-float("inf")).to(tl.float32)
        row_step = tl.load(step + b)
        x = tl.where((i == EOS) & (row_step < EOS_STEPS), -float("inf"), x)
        p = tl.load(penalty + b)
        was_seen = tl.load(seen + b * V + i, mask=ok, other=0) != 0
        x = tl.where(was_seen, tl.where(x < 0, x * p, x / p), x)
        stop_argmax = tl.argmax(x, 0) == EOS
        if ANY_TOP_P:
            tp = tl.load(top_p + b)
            ordered = tl.sort(x, 0, descending=True)
            shifted = tl.exp(ordered - tl.max(ordered, 0))
            cumulative = tl.cumsum(shifted, 0) / tl.sum(shifted, 0)
            keep = (cumulative <= tp) | (i == 0)
            floor = tl.min(tl.where(keep, ordered, float("inf")), 0)
            floor = tl.where(tp < 1.0, floor, -float("inf"))  # top_p 1: keep everything
            x = tl.where(x >= floor, x, -float("inf"))
        x = x / tl.load(temperature + b)
        # top-k keeps x >= the k-th largest value (counted with ties). A small k walks
        # down the distinct values, two reductions each; sorting the block costs ~50 us.
        k = tl.load(top_k + b)
        if k <= TOPK_WALK:
            pivot = tl.full((), float("inf"), tl.float32)
            taken = tl.full((), 0, tl.int32)
            walked = tl.full((), 0, tl.int32)
            while (taken < k) & (walked < k):  # k values at most; NaNs cannot hang it
                pivot = tl.max(tl.where(x < pivot, x, -float("inf")), 0)
                taken += tl.sum((x == pivot).to(tl.int32), 0)
                walked += 1
        else:
            ordered = tl.sort(x, 0, descending=True)
            pivot = tl.sum(tl.where(i == k - 1, ordered, 0.0), 0)
        x = tl.where(x >= pivot, x, -float("inf"))
        e = tl.exp(x - tl.max(x, 0))
        probs = e / tl.sum(e, 0)
        if WRITE_PROBS:
            tl.store(probs_out + b * V + i, probs, mask=ok)
        u = tl.rand(tl.load(seed + b) + row_step, i)
        race = tl.where(ok, probs / -tl.log(tl.maximum(u, 1e-20)), -1.0)
        token = tl.argmax(race, 0)
        stop = stop_argmax | (token == EOS)
        tl.store(token_out + b, token.to(tl.int64))
        tl.store(stop_out + b, stop.to(tl.int8))
        if BOOKKEEP:  # the batch's step bookkeeping (``batching``), one row per program
            emitted = (tl.load(active + b) != 0) & (stop == 0) & (row_step < tl.load(limit + b))
            tl.store(report + b * report_stride + column, tl.where(emitted, token, -1).to(tl.int64))
            tl.store(active + b, emitted)
            tl.store(seen + b * V + token, token >= 0)
            slot = tl.load(input_pos + b)
            tl.store(pos_out + b, tl.minimum(slot, tl.load(last_slot + b)))
            tl.store(input_pos + b, slot + 1)
            tl.store(step + b, row_step + 1)
            if LAST:
                tl.store(report + b * report_stride + column + 1, emitted.to(tl.int64))

    _KERNELS.update(
        embed=embed_kernel,
        gemv=gemv_kernel,
        gemm=gemm_kernel,
        attention=attention_kernel,
        sample=sample_kernel,
    )
    return _KERNELS


def _block_n(n: int, programs: int) -> int:
    """Rows per GEMV program: enough programs to spread a small matrix over the chip."""
    return max(1, min(512, triton_next_pow2(max(1, n // programs))))


def triton_next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


# Largest weight tile (elements) one GEMV program loads at once; wider rows loop over K.
_TILE_LIMIT = 16384
# ``gemm_kernel`` issues each weight tile's load one step ahead of its product (False:
# in the step that uses it, the benchmark's baseline; H200, 64 rows: 1,418 against
# 1,680 us per step).
GEMM_PREFETCH = True
# ``tune_step`` tries the row-blocked GEMV from this many batch rows.
ROW_BLOCK_MIN_BATCH = 4
# ``tune_step``'s K per step of the row-blocked GEMV: a weight up to 512 wide in one step
# (its rows and weight tile loaded at once, the LayerNorm statistics from those
# registers), wider ones in steps of 512. H200, each GEMV at 64 rows: 4.9-6.1 us against
# 6.3-8.2 us in steps of 64; the 64-row step 933 against 1,292 us (``gpu_bench.py gemmk``).
ROW_BLOCK_K = (512,)


@dataclass(frozen=True)
class GemvConfig:
    """Launch shape of one GEMV: weight rows per program, warps per program, and batch
    rows per program (``block_b``): 1 runs ``gemv_kernel``, which reads the weights once per
    batch row; 16 or more runs ``gemm_kernel``, once per block of batch rows, on the tensor
    cores (what wins at a few dozen rows). ``block_k``: the row-blocked kernel's K per step
    (capped at K; at K the whole product is one step: one load of weights and rows, no chain
    of dependent loads)."""

    block_n: int
    num_warps: int = 4
    block_b: int = 1
    block_k: int = 64


@dataclass(frozen=True)
class AttentionConfig:
    """Launch shape of decode attention: sequence splits per head, slots per block, warps."""

    splits: int
    block_s: int = 64
    num_warps: int = 4


class FusedDecodeStep:
    """``Text2Semantic.forward`` for one decode step, in ``5 · n_layer + 2`` Triton launches.

    Buffers for ``max_batch`` rows are allocated once, so the step can be captured in a
    CUDA graph; the returned logits (B, V) float32 are a view of a static buffer.
    ``gemv`` maps a weight shape (N, K) to its launch shape; ``attention`` sets the split
    count (by default enough programs to fill the GPU at ``max_batch`` rows).

    ``pdl`` launches every kernel with programmatic dependent launch (Hopper and later): a
    kernel starts while the one before it is still running, loads its weight tile, and
    only then waits for the activations it reads. At batch 1 each launch costs more than
    its arithmetic, so hiding the gap between kernels is most of what is left to gain
    (H200, whole step in a graph: 341 vs 373 us at 1 row, 372 vs 449 us at 4 rows).
    """

    def __init__(
        self,
        model: Text2Semantic,
        max_batch: int,
        *,
        gemv: dict[tuple[int, int], GemvConfig] | None = None,
        attention: AttentionConfig | None = None,
        pdl: bool = False,
    ) -> None:
        cfg = model.config
        weight = model.ar_predict_layer.weight
        dim, units = cfg.hidden_dim, cfg.linear_units
        if dim & (dim - 1) or cfg.head_dim & (cfg.head_dim - 1) or units % min(units, 512):
            raise KernelUnavailableError(
                f"fused step needs power-of-two widths; got hidden {dim}, head {cfg.head_dim}"
            )
        self.model, self.cfg, self.max_batch = model, cfg, max_batch
        dev, dt = weight.device, weight.dtype
        if dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise KernelUnavailableError(
                f"the fused step runs on CUDA (or under TRITON_INTERPRET=1), not on {dev}"
            )
        self.kernels = _kernels()
        on_gpu = dev.type == "cuda"
        self.pdl = pdl and on_gpu

        def buf(*shape: int, dtype: torch.dtype = dt) -> Tensor:
            return torch.zeros(max_batch, *shape, dtype=dtype, device=dev)

        self.x0, self.y, self.x1 = buf(dim), buf(dim), buf(dim)
        self.qkv, self.a, self.f = buf(3 * dim), buf(dim), buf(dim)
        self.h, self.logits = buf(units), buf(cfg.vocab_size, dtype=torch.float32)
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        # GEMV programs per matrix: ~one per SM on a GPU; the interpreter (CPU tests) runs
        # programs one after another, so there a few large ones.
        programs = 128 if on_gpu else 2
        self.gemv_configs = {
            shape: GemvConfig(_block_n(shape[0], programs))
            for shape in {(int(m.shape[0]), int(m.shape[1])) for m in self._matrices()}
        }
        self.gemv_configs.update(gemv or {})
        if attention is None:
            heads = max_batch * cfg.n_head
            splits = min(16, triton_next_pow2(max(1, -(-128 // heads))))
            attention = AttentionConfig(splits, 64) if on_gpu else AttentionConfig(1, 64)
        self.attention_config = attention
        n = attention.splits
        self.part_m = buf(cfg.n_head, n, dtype=torch.float32)
        self.part_l = buf(cfg.n_head, n, dtype=torch.float32)
        self.part_acc = buf(cfg.n_head, n, cfg.head_dim, dtype=torch.float32)
        for p in model.parameters():
            if not p.is_contiguous():
                raise KernelUnavailableError("fused step needs contiguous weights")

    def _matrices(self) -> list[Tensor]:
        out = [self.model.ar_predict_layer.weight]
        for layer in cast(list[Block], list(self.model.h.layers)):
            attn = layer.self_attn
            out += [attn.in_proj_weight, attn.out_proj.weight]
            out += [layer.linear1.weight, layer.linear2.weight]
        return out

    def _gemv(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        out: Tensor,
        batch: int,
        *,
        ln: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
        relu: bool = False,
        combine: bool = False,
    ) -> None:
        """out[:batch] = act(weight · v + bias); v = LN(x + other) (stored in x_out), the
        combined attention partials (``combine``) or x."""
        n, k = weight.shape
        config = self.gemv_configs.get((n, k)) or GemvConfig(_block_n(n, 128))
        mode = 2 if combine else 1 if ln is not None else 0
        if combine:
            xa, xb, ln_w, ln_b, x_out = self.part_m, self.part_l, self.part_acc, weight, out
        elif ln is not None:
            xa, (xb, ln_w, ln_b, x_out) = x, ln
        else:
            xa, xb, ln_w, ln_b, x_out = x, x, weight, weight, x
        if config.block_b > 1:
            block_k = min(config.block_k, k)
            if config.block_b < 16 or config.block_n < 16 or block_k < 16 or k % block_k:
                raise KernelUnavailableError(
                    f"row-blocked GEMV needs 16+ rows, weight rows and K per program and K a "
                    f"multiple of {block_k}; got {config} for a {n}x{k} weight"
                )
            one_k = block_k == k
            self.kernels["gemm"][(-(-n // config.block_n), -(-batch // config.block_b))](
                xa, xb, ln_w, ln_b, weight, bias if bias is not None else weight, out, x_out,
                batch, n, k, self.cfg.norm_eps,
                MODE=mode, HAS_BIAS=bias is not None, RELU=relu, BLOCK_B=config.block_b,
                BLOCK_N=config.block_n, BLOCK_K=block_k, DH=self.cfg.head_dim,
                SPLITS=self.attention_config.splits, IEEE=weight.dtype == torch.float32,
                PREFETCH=GEMM_PREFETCH and not one_k, PDL=self.pdl, ONE_K=one_k,
                num_warps=config.num_warps, launch_pdl=self.pdl,
            )  # fmt: skip
            return
        whole = mode != 0 or config.block_n * k <= _TILE_LIMIT
        block_k = triton_next_pow2(k) if whole else max(16, _TILE_LIMIT // config.block_n)
        grid = (-(-n // config.block_n), batch)
        self.kernels["gemv"][grid](
            xa, xb, ln_w, ln_b, weight, bias if bias is not None else weight, out, x_out,
            n, k, self.cfg.norm_eps,
            MODE=mode, HAS_BIAS=bias is not None, RELU=relu,
            BLOCK_N=config.block_n, BLOCK_K=block_k, DH=self.cfg.head_dim,
            SPLITS=self.attention_config.splits, PDL=self.pdl,
            num_warps=config.num_warps, launch_pdl=self.pdl,
        )  # fmt: skip

    def _attention(self, layer: int, input_pos: Tensor, batch: int) -> None:
        k_cache, v_cache, row_start, _ = self.model._caches(batch, 1)
        kc, vc = k_cache[layer], v_cache[layer]  # (Bmax, H, S, Dh)
        a = self.attention_config
        self.kernels["attention"][(batch, self.cfg.n_head, a.splits)](
            self.qkv, kc, vc, self.part_m, self.part_l, self.part_acc, input_pos, row_start,
            kc.stride(0), kc.stride(1), self.scale,
            D=self.cfg.hidden_dim, DH=self.cfg.head_dim, BLOCK_S=a.block_s, SPLITS=a.splits,
            PDL=self.pdl, num_warps=a.num_warps, launch_pdl=self.pdl,
        )  # fmt: skip

    def __call__(self, tokens: Tensor, input_pos: Tensor, kv_len: int | None = None) -> Tensor:
        """tokens (B,) written at cache slots input_pos (B,) -> logits (B, V) float32."""
        model, cfg = self.model, self.cfg
        batch = tokens.shape[0]
        if batch > self.max_batch:
            raise KernelUnavailableError(f"step built for {self.max_batch} rows, got {batch}")
        _, _, _, audio_start = model._caches(batch, 1)
        emb = model.ar_audio_embedding.word_embeddings.weight
        pos_mod = model.ar_audio_position
        self.kernels["embed"][(batch,)](
            tokens,
            input_pos,
            audio_start,
            emb,
            pos_mod.pe,
            pos_mod.alpha,
            self.x0,
            D=cfg.hidden_dim,
            PDL=self.pdl,
            launch_pdl=self.pdl,
        )
        layers = cast(list[Block], list(model.h.layers))
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            prev = layers[i - 1] if i else None
            ln = None if prev is None else (self.f, prev.norm2.weight, prev.norm2.bias, self.y)
            x = self.x0 if prev is None else self.x1
            self._gemv(x, attn.in_proj_weight, attn.in_proj_bias, self.qkv, batch, ln=ln)
            residual = self.x0 if prev is None else self.y
            self._attention(i, input_pos, batch)
            self._gemv(
                self.qkv, attn.out_proj.weight, attn.out_proj.bias, self.a, batch, combine=True
            )
            ln1 = (self.a, layer.norm1.weight, layer.norm1.bias, self.x1)
            self._gemv(
                residual, layer.linear1.weight, layer.linear1.bias, self.h, batch, ln=ln1, relu=True
            )
            self._gemv(self.h, layer.linear2.weight, layer.linear2.bias, self.f, batch)
        last = layers[-1]
        ln_out = (self.f, last.norm2.weight, last.norm2.bias, self.y)
        self._gemv(self.x1, model.ar_predict_layer.weight, None, self.logits, batch, ln=ln_out)
        return self.logits[:batch]


class RowBucketSteps:
    """One decode step per row bucket of a continuous batch (``batching.row_buckets``):
    called with B rows it runs the step built for the smallest bucket holding B, each with
    launch shapes for its own row count (a shape tuned for 64 rows reads each weight tile
    once per 64 rows and leaves most of the GPU idle at one). The batch reads
    ``row_buckets``; ``logits`` and ``pdl`` are the whole batch's step's."""

    def __init__(self, steps: dict[int, FusedDecodeStep]) -> None:
        if not steps:
            raise KernelUnavailableError("no decode step to dispatch to")
        self.row_buckets = tuple(sorted(steps))
        self.steps = steps
        whole = steps[self.row_buckets[-1]]
        self.logits, self.pdl = whole.logits, whole.pdl

    def step_for(self, rows: int) -> FusedDecodeStep:
        bucket = bucket_for(self.row_buckets, rows)
        if bucket is None:
            raise KernelUnavailableError(f"steps built for {self.row_buckets[-1]} rows, got {rows}")
        return self.steps[bucket]

    def __call__(self, tokens: Tensor, input_pos: Tensor, kv_len: int | None = None) -> Tensor:
        return self.step_for(tokens.shape[0])(tokens, input_pos, kv_len)


def bucket_step(
    model: Text2Semantic, rows: int, one: TuneResult, whole: TuneResult, pdl: bool
) -> FusedDecodeStep:
    """A step for a row bucket between one row and the whole batch, from the launch shapes
    tuned at those two: below ``ROW_BLOCK_MIN_BATCH`` rows the one-row GEMV shapes, from
    there the whole batch's (row blocks no taller than the bucket needs); attention split
    as ``FusedDecodeStep``'s default for ``rows``."""
    if rows < ROW_BLOCK_MIN_BATCH:
        gemv = dict(one.gemv)
    else:
        tall = max(16, triton_next_pow2(rows))
        gemv = {
            shape: c if c.block_b <= tall else replace(c, block_b=tall)
            for shape, c in whole.gemv.items()
        }
    return FusedDecodeStep(model, rows, gemv=gemv, pdl=pdl)


class FusedSampler:
    """``generate.next_token`` with the EOS bar in one Triton launch per step (any batch).

    Same filters as ``generate.filtered_probs`` (ties at the top-p boundary are kept, as
    at the top-k pivot). The draw is the same exponential race, but its uniforms come from
    Philox keyed by each row's ``seed`` and step, so a seeded row draws the same numbers
    whatever rows decode beside it (and a CUDA graph can replay it).
    """

    def __init__(self, vocab_size: int, eos: int, eos_blocked_steps: int, max_batch: int,
                 device: torch.device, pdl: bool = False, num_warps: int = 8) -> None:  # fmt: skip
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise KernelUnavailableError(
                f"the fused sampler runs on CUDA (or under TRITON_INTERPRET=1), not on {device}"
            )
        self.kernels = _kernels()
        self.pdl = pdl and device.type == "cuda"
        # H200, one row: 8 warps 5.6 / 11.4 / 26.5 us at top_k 1 / 15 / 100, 4 warps
        # 6.3 / 11.6 / 39.1, 16 warps 5.9 / 12.6 / 20.6 (the sort needs more threads)
        self.num_warps = num_warps
        self.vocab, self.eos, self.eos_steps = vocab_size, eos, eos_blocked_steps
        self.block = triton_next_pow2(vocab_size)
        self.token = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.stop = torch.zeros(max_batch, dtype=torch.int8, device=device)
        self.seed = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.pos = torch.zeros(max_batch, dtype=torch.long, device=device)

    def __call__(
        self,
        logits: Tensor,
        seen: Tensor,
        step: Tensor,
        top_k: Tensor,
        top_p: Tensor,
        temperature: Tensor,
        penalty: Tensor,
        any_top_p: bool,
        probs_out: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Raw logits (B, V) float32 -> tokens (B,) and whether each row stops (B,) bool."""
        batch = logits.shape[0]
        t = self.token
        self.kernels["sample"][(batch,)](
            logits, seen, step, self.seed, top_k, top_p, temperature, penalty,
            self.token, self.stop, probs_out if probs_out is not None else logits,
            self.vocab, self.eos, self.eos_steps, t, t, t, t, t, t, 0, 0,
            ANY_TOP_P=any_top_p, WRITE_PROBS=probs_out is not None, BLOCK=self.block,
            BOOKKEEP=False, LAST=False, PDL=self.pdl, launch_pdl=self.pdl,
            num_warps=self.num_warps,
        )  # fmt: skip
        return self.token[:batch], self.stop[:batch].bool()

    def step_rows(
        self, state: Any, column: int, last: bool, any_top_p: bool
    ) -> tuple[Tensor, Tensor]:
        """One batch step's sampling and bookkeeping in the same launch, on the batcher's
        state (``batching._BatchState``): each row's token, whether it was emitted (into
        ``report[:, column]`` as the token or -1; after the ``last`` step of a replay its
        activity into the next column), the seen set, its step and next slot. Returns the
        tokens and the cache slots to write them at, for the forward."""
        s = state
        batch = s.logits.shape[0]
        self.kernels["sample"][(batch,)](
            s.logits, s.seen, s.step, self.seed, s.top_k, s.top_p, s.temperature, s.penalty,
            self.token, self.stop, s.logits, self.vocab, self.eos, self.eos_steps,
            s.active, s.limit, s.report, s.input_pos, s.last_slot, self.pos, column,
            s.report.stride(0),
            ANY_TOP_P=any_top_p, WRITE_PROBS=False, BLOCK=self.block, BOOKKEEP=True, LAST=last,
            PDL=self.pdl, launch_pdl=self.pdl, num_warps=self.num_warps,
        )  # fmt: skip
        return self.token[:batch], self.pos[:batch]


def _graph_time(
    fn: Callable[[], object], device: torch.device, launches: int = 32, reps: int = 5
) -> float:
    """Seconds per call of ``fn`` replayed ``launches`` times inside one CUDA graph (on a
    CPU, under Triton's interpreter, plain wall time of a few calls)."""
    fn()
    if device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(2):
            fn()
        return (time.perf_counter() - t0) / 2
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with capturing(graph, device):
        for _ in range(launches):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(reps):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3 / launches)
    return best


def out_of_resources(exc: Exception) -> bool:
    """Triton's "out of resource" error (its class is in Triton, imported lazily): a launch
    shape whose tiles outgrow the GPU's shared memory, raised before anything launches."""
    return type(exc).__name__ == "OutOfResources"


def _candidate_time(fn: Callable[[], object], device: torch.device) -> float:
    """``_graph_time`` of one tuning candidate; infinite where the GPU cannot run its launch
    shape (``out_of_resources``: a K step whose tiles outgrow shared memory)."""
    try:
        return _graph_time(fn, device)
    except Exception as err:
        if not out_of_resources(err):
            raise
        _LOGGER.debug("launch shape refused: %s", err)
        return math.inf


@dataclass
class TuneResult:
    """Launch shapes picked by ``tune_step`` and every candidate's time (seconds)."""

    gemv: dict[tuple[int, int], GemvConfig]
    attention: AttentionConfig
    timings: list[tuple[str, str, float]]  # (kernel, candidate, seconds per launch)
    pdl: bool = False

    def step(self, model: Text2Semantic, rows: int, *, pdl: bool | None = None) -> FusedDecodeStep:
        """The step with these launch shapes, in the chosen launch mode unless ``pdl``."""
        return FusedDecodeStep(
            model,
            rows,
            gemv=self.gemv,
            attention=self.attention,
            pdl=self.pdl if pdl is None else pdl,
        )


@torch.no_grad()
def tune_step(
    model: Text2Semantic,
    max_batch: int,
    *,
    slots: int,
    block_n: tuple[int, ...] = (1, 2, 4, 8, 16),
    warps: tuple[int, ...] = (2, 4, 8),
    splits: tuple[int, ...] = (1, 4, 8, 16),
    block_s: tuple[int, ...] = (32, 64),
    row_blocks: tuple[int, ...] = (16, 32, 64),
    row_block_n: tuple[int, ...] = (16, 32, 64),
    row_block_k: tuple[int, ...] = ROW_BLOCK_K,
) -> TuneResult:
    """Time each GEMV shape and the attention (+ its combining GEMV) of the fused step at
    ``max_batch`` rows attending over ``slots`` cache slots, on CUDA; return the fastest.

    From ``ROW_BLOCK_MIN_BATCH`` rows the GEMV candidates also include the row-blocked
    kernel: ``row_blocks`` batch rows per program (those not above ``max_batch`` rounded up
    to a power of two) by ``row_block_n`` weight rows, each in K steps of ``row_block_k``
    (capped at each weight's K). The model's caches must hold
    ``max_batch`` rows of more than ``slots`` slots. Every candidate compiles once (Triton
    caches it on disk), so this takes tens of seconds.
    """
    step = FusedDecodeStep(model, max_batch)
    top = max(16, triton_next_pow2(max_batch))
    blocked = [
        (bb, bn, bk)
        for bb in row_blocks
        if max_batch >= ROW_BLOCK_MIN_BATCH and bb <= top
        for bn in row_block_n
        for bk in row_block_k
    ]
    per_row_candidates = [GemvConfig(bn, w) for bn in block_n for w in warps]
    dev = step.x0.device
    layer = cast(Block, model.h.layers[0])
    attn = layer.self_attn
    pos = torch.full((max_batch,), slots, dtype=torch.long, device=step.x0.device)
    timings: list[tuple[str, str, float]] = []
    # the fastest launch shape of each GEMV, and of those with one batch row per program
    gemv: dict[tuple[int, int], GemvConfig] = {}
    per_row: dict[tuple[int, int], GemvConfig] = {}
    for name, (weight, call) in gemv_calls(model, step, max_batch).items():
        shape = (int(weight.shape[0]), int(weight.shape[1]))
        candidates = per_row_candidates + _blocked(blocked, warps, shape[1])
        tried = []
        for config in candidates:
            step.gemv_configs[shape] = config
            t = _candidate_time(partial(call, step), dev)
            timings.append((f"{name} {shape[0]}x{shape[1]}", gemv_label(config), t))
            tried.append((t, config))
        gemv[shape] = step.gemv_configs[shape] = min(tried, key=_time)[1]
        per_row[shape] = min((tc for tc in tried if tc[1].block_b == 1), key=_time)[1]
    out_shape = (int(attn.out_proj.weight.shape[0]), int(attn.out_proj.weight.shape[1]))
    paired: list[tuple[float, AttentionConfig, GemvConfig]] = []
    combines = [GemvConfig(bn, 4) for bn in block_n] + _blocked(blocked, (4,), out_shape[1])
    for n in splits:
        for bs in block_s:
            for w in warps:
                candidate = AttentionConfig(n, bs, w)
                trial = FusedDecodeStep(model, max_batch, gemv=gemv, attention=candidate)
                for combine in combines:
                    trial.gemv_configs[out_shape] = combine

                    def pair(s: FusedDecodeStep = trial) -> None:
                        s._attention(0, pos, max_batch)
                        s._gemv(s.qkv, attn.out_proj.weight, attn.out_proj.bias, s.a,
                                max_batch, combine=True)  # fmt: skip

                    t = _candidate_time(pair, dev)
                    label = (
                        f"splits {n}, slots/block {bs}, warps {w}; combine {gemv_label(combine)}"
                    )
                    timings.append((f"attention + out proj @{slots} slots", label, t))
                    paired.append((t, candidate, combine))
    _, attention, gemv[out_shape] = min(paired, key=_time)
    result = TuneResult(gemv, attention, timings)
    # Each kernel was timed alone; inside the step a kernel with one batch row per program
    # also overlaps its weight loads with the kernel before (programmatic dependent
    # launch), so the whole step decides between the row-blocked and the per-row shapes.
    _, per_row_attention, per_row[out_shape] = min(
        (tac for tac in paired if tac[2].block_b == 1), key=_time
    )
    variants = [result]
    if gemv != per_row or attention != per_row_attention:
        variants.append(TuneResult(per_row, per_row_attention, timings))
    return _pick_whole_step(model, max_batch, variants, pos)


def gemv_calls(
    model: Text2Semantic, step: FusedDecodeStep, rows: int
) -> dict[str, tuple[Tensor, Callable[[FusedDecodeStep], None]]]:
    """The step's GEMVs as ``tune_step`` times them, by name: (weight, call on a step
    built like ``step``) for the first layer's qkv, ffn up, ffn down and the logits."""
    layer = cast(Block, model.h.layers[0])
    attn = layer.self_attn
    ln2 = (step.f, layer.norm2.weight, layer.norm2.bias, step.y)
    ln1 = (step.a, layer.norm1.weight, layer.norm1.bias, step.x1)
    return {
        "qkv (LN)": (
            attn.in_proj_weight,
            lambda s: s._gemv(s.x1, attn.in_proj_weight, attn.in_proj_bias, s.qkv, rows, ln=ln2),
        ),
        "ffn up (LN, relu)": (
            layer.linear1.weight,
            lambda s: s._gemv(
                s.y, layer.linear1.weight, layer.linear1.bias, s.h, rows, ln=ln1, relu=True
            ),
        ),
        "ffn down": (
            layer.linear2.weight,
            lambda s: s._gemv(s.h, layer.linear2.weight, layer.linear2.bias, s.f, rows),
        ),
        "logits (LN)": (
            model.ar_predict_layer.weight,
            lambda s: s._gemv(s.x1, model.ar_predict_layer.weight, None, s.logits, rows, ln=ln2),
        ),
    }


def _blocked(
    blocked: list[tuple[int, int, int]], warps: tuple[int, ...], k: int
) -> list[GemvConfig]:
    """Row-blocked candidates for a weight of width ``k``: K steps capped at ``k`` (so
    several asked-for steps may be one), each shape once."""
    out = {GemvConfig(bn, w, bb, min(bk, k)) for bb, bn, bk in blocked for w in warps}
    return sorted(out, key=lambda c: (c.block_b, c.block_n, c.block_k, c.num_warps))


def _time(timed: tuple[float, object] | tuple[float, object, object]) -> float:
    return timed[0]


def gemv_label(config: GemvConfig) -> str:
    """A launch shape as the tuner's timings and the pipeline's log name it."""
    label = f"rows {config.block_n}, warps {config.num_warps}"
    if config.block_b == 1:
        return label
    return f"{label}, batch rows {config.block_b}, K {config.block_k}"


def _pick_whole_step(
    model: Text2Semantic, max_batch: int, variants: list[TuneResult], pos: Tensor
) -> TuneResult:
    """Time each variant's whole step with and without programmatic dependent launch (into
    the shared timings) and return the fastest, its launch mode set; PDL only where it
    captures, replays and is faster here (older drivers refuse it in a graph). With two
    variants (row-blocked GEMVs, per-row ones) each label says which."""
    if pos.device.type != "cuda":
        return variants[0]  # the interpreter has no launch modes (nor meaningful times)
    tokens = torch.zeros(max_batch, dtype=torch.long, device=pos.device)
    timings = variants[0].timings
    best: tuple[float, TuneResult, bool] | None = None
    for tuned in variants:
        blocked = any(c.block_b > 1 for c in tuned.gemv.values())
        kind = "" if len(variants) == 1 else (", row-blocked" if blocked else ", per-row")
        for pdl in (False, True):
            step = tuned.step(model, max_batch, pdl=pdl)
            label = ("programmatic dependent launch" if pdl else "plain launches") + kind
            try:
                t = _graph_time(partial(step, tokens, pos), pos.device, launches=8)
            except Exception as err:  # any refusal means: launch without it
                timings.append(("whole step", label, math.inf))
                _LOGGER.info("programmatic dependent launch unavailable here: %s", err)
                break
            timings.append(("whole step", label, t))
            if best is None or t < best[0]:
                best = (t, tuned, pdl)
    assert best is not None
    _, chosen, pdl = best
    chosen.pdl = pdl
    return chosen
