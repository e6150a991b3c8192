"""Fused Triton kernels for the GPT decode step: five launches per layer instead of ~17.

The unfused step (``Text2Semantic.forward``) is launch-bound on a GPU: at batch 1 every
matrix is a GEMV of at most 2 MB, and each of its ~400 kernels costs a few microseconds
whatever it computes. This step computes the same function with

    embed                         token embedding + alpha · sine position        (1 launch)
    per layer:
      qkv     = LN2'(x1 + f) · Wqkv + b   the previous layer's second LayerNorm is the
                                           prologue (layer 0 reads the embedding)
      attn    = cache write of k, v + single-pass online-softmax attention per head
      a       = attn · Wo + b
      h       = relu(LN1(y + a) · W1 + b)  the first LayerNorm is the prologue
      f       = h · W2 + b
    logits  = LN2(x1 + f) · Wpred        (float32 out)

Each GEMV program recomputes the 512-wide LayerNorm of its input (cheap) instead of a
separate normalisation launch; program 0 of each row also stores the normalised vector,
which is the residual the next LayerNorm needs. Normalised vectors are rounded to the
model dtype before the product, as the unfused path stores them; accumulation is float32.

The step has the fixed-shape ``forward(tokens, input_pos, kv_len=None) -> logits``
contract of ``Text2Semantic.forward`` (``kv_len`` is not needed: attention loops to each
row's own position), so ``fast.T2SGraphRunner(model, forward=FusedDecodeStep(model, B))``
captures it in a CUDA graph. Triton is imported lazily: the package works without it.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any, cast

import torch
from torch import Tensor

from .models.t2s import Block, Text2Semantic


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

    @triton.jit
    def embed_kernel(tok, pos, audio_start, emb, pe, alpha, out, D: tl.constexpr):
        b = tl.program_id(0)
        d = tl.arange(0, D)
        t = tl.load(tok + b)
        p = tl.load(pos + b) - tl.load(audio_start + b)
        x = tl.load(emb + t * D + d).to(tl.float32)
        x += tl.load(alpha).to(tl.float32) * tl.load(pe + p * D + d).to(tl.float32)
        tl.store(out + b * D + d, x.to(out.dtype.element_ty))

    @triton.jit
    def gemv_kernel(
        xa, xb, ln_w, ln_b, w, bias, out, x_out, N, K, eps,
        HAS_LN: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        # out[b, n] = act(W[n, :] · v + bias[n]), v = LN(xa[b] + xb[b]) or xa[b].
        pid = tl.program_id(0)
        b = tl.program_id(1)
        n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = n < N
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        if HAS_LN:  # K == BLOCK_K: the whole row is one block
            k = tl.arange(0, BLOCK_K)
            s = tl.load(xa + b * K + k).to(tl.float32) + tl.load(xb + b * K + k).to(tl.float32)
            mean = tl.sum(s, 0) / K
            centred = s - mean
            rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 0) / K + eps)
            v = centred * rstd * tl.load(ln_w + k).to(tl.float32) + tl.load(ln_b + k).to(tl.float32)
            v_stored = v.to(x_out.dtype.element_ty)
            if pid == 0:
                tl.store(x_out + b * K + k, v_stored)
            tile = tl.load(w + n[:, None] * K + k[None, :], mask=n_ok[:, None], other=0.0)
            acc += tl.sum(tile.to(tl.float32) * v_stored.to(tl.float32)[None, :], 1)
        else:
            for k0 in range(0, K, BLOCK_K):
                k = k0 + tl.arange(0, BLOCK_K)
                v = tl.load(xa + b * K + k).to(tl.float32)
                tile = tl.load(w + n[:, None] * K + k[None, :], mask=n_ok[:, None], other=0.0)
                acc += tl.sum(tile.to(tl.float32) * v[None, :], 1)
        if HAS_BIAS:
            acc += tl.load(bias + n, mask=n_ok, other=0.0).to(tl.float32)
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(out + b * N + n, acc.to(out.dtype.element_ty), mask=n_ok)

    @triton.jit
    def attention_kernel(
        qkv, k_cache, v_cache, out, pos, row_start, stride_b, stride_h, scale,
        D: tl.constexpr, DH: tl.constexpr, BLOCK_S: tl.constexpr,
    ):  # fmt: skip
        # One (row, head): write this step's k, v at the row's slot, then attend over
        # slots [row_start, pos) from the cache plus the new key held in registers.
        b = tl.program_id(0)
        h = tl.program_id(1)
        d = tl.arange(0, DH)
        p = tl.load(pos + b)
        start = tl.load(row_start + b)
        base = qkv + b * 3 * D + h * DH
        q = tl.load(base + d).to(tl.float32)
        k_new = tl.load(base + D + d)
        v_new = tl.load(base + 2 * D + d)
        head = b * stride_b + h * stride_h
        tl.store(k_cache + head + p * DH + d, k_new)
        tl.store(v_cache + head + p * DH + d, v_new)
        m = tl.sum(q * k_new.to(tl.float32), 0) * scale
        denom = tl.full((), 1.0, tl.float32)
        acc = v_new.to(tl.float32)
        lo = (start // BLOCK_S) * BLOCK_S
        for s0 in range(lo, p, BLOCK_S):
            j = s0 + tl.arange(0, BLOCK_S)
            ok = (j >= start) & (j < p)
            kt = tl.load(k_cache + head + j[:, None] * DH + d[None, :], mask=ok[:, None], other=0.0)
            score = tl.sum(kt.to(tl.float32) * q[None, :], 1) * scale
            score = tl.where(ok, score, -float("inf"))
            m_new = tl.maximum(m, tl.max(score, 0))
            keep = tl.exp(m - m_new)
            weight = tl.exp(score - m_new)
            vt = tl.load(v_cache + head + j[:, None] * DH + d[None, :], mask=ok[:, None], other=0.0)
            acc = acc * keep + tl.sum(weight[:, None] * vt.to(tl.float32), 0)
            denom = denom * keep + tl.sum(weight, 0)
            m = m_new
        tl.store(out + b * D + h * DH + d, (acc / denom).to(out.dtype.element_ty))

    @triton.jit
    def sample_kernel(
        logits, seen, step, seed, top_k, top_p, temperature, penalty, token_out, stop_out,
        probs_out, V, EOS, EOS_STEPS,
        ANY_TOP_P: tl.constexpr, WRITE_PROBS: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        # One row: EOS bar, repetition penalty, top-p, temperature, top-k, softmax, then
        # the exponential race argmax(p / E) with E = -log(U), U from (seed, step) Philox.
        b = tl.program_id(0)
        i = tl.arange(0, BLOCK)
        ok = i < V
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
        ordered = tl.sort(x, 0, descending=True)
        k = tl.load(top_k + b)
        pivot = tl.sum(tl.where(i == k - 1, ordered, 0.0), 0)
        x = tl.where(x >= pivot, x, -float("inf"))
        e = tl.exp(x - tl.max(x, 0))
        probs = e / tl.sum(e, 0)
        if WRITE_PROBS:
            tl.store(probs_out + b * V + i, probs, mask=ok)
        u = tl.rand(tl.load(seed + b) + row_step, i)
        race = tl.where(ok, probs / -tl.log(tl.maximum(u, 1e-20)), -1.0)
        token = tl.argmax(race, 0)
        tl.store(token_out + b, token.to(tl.int64))
        tl.store(stop_out + b, (stop_argmax | (token == EOS)).to(tl.int8))

    _KERNELS.update(
        embed=embed_kernel, gemv=gemv_kernel, attention=attention_kernel, sample=sample_kernel
    )
    return _KERNELS


def _block_n(n: int, programs: int) -> int:
    """Rows per GEMV program: enough programs to spread a small matrix over the chip."""
    return max(2, min(512, triton_next_pow2(max(1, n // programs))))


def triton_next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


class FusedDecodeStep:
    """``Text2Semantic.forward`` for one decode step, in ``5 · n_layer + 2`` Triton launches.

    Buffers for ``max_batch`` rows are allocated once, so the step can be captured in a
    CUDA graph; the returned logits (B, V) float32 are a view of a static buffer.
    """

    def __init__(self, model: Text2Semantic, max_batch: int) -> None:
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

        def buf(width: int, dtype: torch.dtype = dt) -> Tensor:
            return torch.zeros(max_batch, width, dtype=dtype, device=dev)

        self.x0, self.y, self.x1 = buf(dim), buf(dim), buf(dim)
        self.qkv, self.attn, self.a, self.f = buf(3 * dim), buf(dim), buf(dim), buf(dim)
        self.h, self.logits = buf(units), buf(cfg.vocab_size, torch.float32)
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        # GEMV programs per matrix: ~one per SM on a GPU; the interpreter (CPU tests) runs
        # programs one after another, so there a few large ones.
        self.programs = 128 if dev.type == "cuda" else 2
        self.block_s = 64
        for p in model.parameters():
            if not p.is_contiguous():
                raise KernelUnavailableError("fused step needs contiguous weights")

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
    ) -> None:
        """out[:batch] = act(weight · v + bias); v = LN(x + other) (stored in x_out) or x."""
        n, k = weight.shape
        block_n = _block_n(n, self.programs)
        xb, ln_w, ln_b, x_out = ln if ln is not None else (x, weight, weight, x)
        grid = (-(-n // block_n), batch)
        self.kernels["gemv"][grid](
            x, xb, ln_w, ln_b, weight, bias if bias is not None else weight, out, x_out,
            n, k, self.cfg.norm_eps,
            HAS_LN=ln is not None, HAS_BIAS=bias is not None, RELU=relu,
            BLOCK_N=block_n, BLOCK_K=k if ln is not None else min(k, 512),
        )  # fmt: skip

    def __call__(self, tokens: Tensor, input_pos: Tensor, kv_len: int | None = None) -> Tensor:
        """tokens (B,) written at cache slots input_pos (B,) -> logits (B, V) float32."""
        model, cfg = self.model, self.cfg
        batch = tokens.shape[0]
        if batch > self.max_batch:
            raise KernelUnavailableError(f"step built for {self.max_batch} rows, got {batch}")
        k_cache, v_cache, row_start, audio_start = model._caches(batch, 1)
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
        )
        layers = cast(list[Block], list(model.h.layers))
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            prev = layers[i - 1] if i else None
            ln = None if prev is None else (self.f, prev.norm2.weight, prev.norm2.bias, self.y)
            x = self.x0 if prev is None else self.x1
            self._gemv(x, attn.in_proj_weight, attn.in_proj_bias, self.qkv, batch, ln=ln)
            residual = self.x0 if prev is None else self.y
            kc, vc = k_cache[i], v_cache[i]  # (Bmax, H, S, Dh)
            self.kernels["attention"][(batch, cfg.n_head)](
                self.qkv, kc, vc, self.attn, input_pos, row_start, kc.stride(0), kc.stride(1),
                self.scale, D=cfg.hidden_dim, DH=cfg.head_dim, BLOCK_S=self.block_s,
            )  # fmt: skip
            self._gemv(self.attn, attn.out_proj.weight, attn.out_proj.bias, self.a, batch)
            ln1 = (self.a, layer.norm1.weight, layer.norm1.bias, self.x1)
            self._gemv(
                residual, layer.linear1.weight, layer.linear1.bias, self.h, batch, ln=ln1, relu=True
            )
            self._gemv(self.h, layer.linear2.weight, layer.linear2.bias, self.f, batch)
        last = layers[-1]
        ln_out = (self.f, last.norm2.weight, last.norm2.bias, self.y)
        self._gemv(self.x1, model.ar_predict_layer.weight, None, self.logits, batch, ln=ln_out)
        return self.logits[:batch]


class FusedSampler:
    """``generate.next_token`` with the EOS bar in one Triton launch per step (any batch).

    Same filters as ``generate.filtered_probs`` (ties at the top-p boundary are kept, as
    at the top-k pivot). The draw is the same exponential race, but its uniforms come from
    Philox keyed by each row's ``seed`` and step, so a seeded row draws the same numbers
    whatever rows decode beside it (and a CUDA graph can replay it).
    """

    def __init__(self, vocab_size: int, eos: int, eos_blocked_steps: int, max_batch: int,
                 device: torch.device) -> None:  # fmt: skip
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise KernelUnavailableError(
                f"the fused sampler runs on CUDA (or under TRITON_INTERPRET=1), not on {device}"
            )
        self.kernels = _kernels()
        self.vocab, self.eos, self.eos_steps = vocab_size, eos, eos_blocked_steps
        self.block = triton_next_pow2(vocab_size)
        self.token = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.stop = torch.zeros(max_batch, dtype=torch.int8, device=device)
        self.seed = torch.zeros(max_batch, dtype=torch.long, device=device)

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
        self.kernels["sample"][(batch,)](
            logits, seen, step, self.seed, top_k, top_p, temperature, penalty,
            self.token, self.stop, probs_out if probs_out is not None else logits,
            self.vocab, self.eos, self.eos_steps,
            ANY_TOP_P=any_top_p, WRITE_PROBS=probs_out is not None, BLOCK=self.block,
        )  # fmt: skip
        return self.token[:batch], self.stop[:batch].bool()
