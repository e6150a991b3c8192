"""GPU benchmark of the fast paths against our eager baseline; prints one table.

Run on a CUDA machine from the repository root: ``python3 bench/gpu_bench.py``. Needs only
torch (the models are built from the weight contract's deterministic fill, tests/contract.py).
Environment: ``BENCH_COMPILE=1`` adds a torch.compile variant of the step; ``BENCH_OUT`` (or
``OUT``) names a folder for the full log (bench.json).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from contract import filled_state_dict, fold_weight_norm, manifest  # noqa: E402

from wyoming_sovits.batching import ContinuousBatcher  # noqa: E402
from wyoming_sovits.fast import SoVITSGraphs, T2SGraphRunner  # noqa: E402
from wyoming_sovits.generate import (  # noqa: E402
    EOS_BLOCKED_STEPS,
    RowParams,
    SamplingParams,
    next_token,
)
from wyoming_sovits.kernels import (  # noqa: E402
    FusedDecodeStep,
    FusedSampler,
    GemvConfig,
    TuneResult,
    tune_step,
)
from wyoming_sovits.models.sv import SpeakerEncoder, SVConfig  # noqa: E402
from wyoming_sovits.models.t2s import (  # noqa: E402
    PackedPrompt,
    T2SConfig,
    T2SInput,
    Text2Semantic,
    pack_inputs,
)
from wyoming_sovits.models.vits import SoVITS, VitsConfig, is_training_only  # noqa: E402
from wyoming_sovits.pipeline import decode_batch  # noqa: E402

DEV = torch.device("cuda")
ROWS: list[tuple[str, str, str]] = []  # (measure, value, note)
LOG: dict[str, object] = {}
N_TOK = 250  # 10 s of audio at 25 tokens/s
PHONES, PROMPT = 80, 150  # target+reference phones, 6 s reference prompt


def row(measure: str, value: str, note: str = "") -> None:
    ROWS.append((measure, value, note))
    print(f"{measure:<44} {value:>14}  {note}", flush=True)


def guarded(name: str, fn: Callable[..., Any], *args: object) -> Any:
    """Run one bench section; a failure becomes a row (with its traceback printed), not an abort."""
    try:
        return fn(*args)
    except Exception as exc:  # a bench keeps going so one run gives the whole table
        traceback.print_exc()
        row(
            f"{name} FAILED", type(exc).__name__, str(exc).splitlines()[0][:120] if str(exc) else ""
        )
        return None


def t2s_model(dtype: torch.dtype) -> Text2Semantic:
    model = Text2Semantic(T2SConfig.v2()).eval()
    weights = {k.removeprefix("model."): v for k, v in filled_state_dict("s1_v2").items()}
    model.load_state_dict(weights, strict=True)
    return model.to(DEV, dtype)


def sovits_model(dtype: torch.dtype) -> SoVITS:
    version = "v2ProPlus"
    model = SoVITS(VitsConfig.from_hparams(manifest(f"s2_{version}")["config"], version)).eval()
    sd = fold_weight_norm(filled_state_dict(f"s2_{version}"))
    model.load_state_dict({k: v for k, v in sd.items() if not is_training_only(k)}, strict=True)
    return model.to(DEV, dtype)


def request(batch: int, seed: int = 0) -> list[T2SInput]:
    g = torch.Generator().manual_seed(seed)
    return [
        T2SInput(
            torch.randint(0, 732, (PHONES,), generator=g),
            torch.randn(1024, PHONES, generator=g),
            torch.randint(0, 1024, (PROMPT,), generator=g),
        )
        for _ in range(batch)
    ]


def cuda_time(fn: Callable[[], object], reps: int = 3) -> float:
    """Median seconds of ``fn`` over ``reps`` runs after one warm-up (events around each)."""
    fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def eager_decode(model: Text2Semantic, inputs: list[T2SInput], steps: int) -> None:
    """``generate.decode``'s loop with a fixed step count (random weights never stop)."""
    cfg = model.config
    packed = pack_inputs(inputs, cfg).to(DEV)
    batch, length = packed.batch_size, packed.length
    model.setup_caches(batch, length + steps)
    rows = RowParams.of([SamplingParams()] * batch, cfg.vocab_size, DEV)
    seen = torch.zeros(batch, cfg.vocab_size, dtype=torch.bool, device=DEV)
    pos = torch.full((batch,), length, dtype=torch.long, device=DEV)
    logits = model.prefill(packed)
    active = torch.ones(batch, dtype=torch.bool, device=DEV)
    for step in range(steps):
        token, stop = next_token(logits, seen, rows, cfg.eos, step >= EOS_BLOCKED_STEPS)
        active &= ~stop
        bool(active.any())  # the eager loop's host sync per step
        seen[torch.arange(batch, device=DEV), token] = True
        logits = model(token, pos)
        pos += 1


def graph_decode(runner: T2SGraphRunner, inputs: list[T2SInput], steps: int) -> int:
    """Runs exactly ``steps`` steps (EOS ignored: random weights); returns steps done."""
    packed = pack_inputs(inputs, runner.cfg)
    params = [SamplingParams()] * len(inputs)
    runner.generate_packed(packed, params, steps, on_tokens=lambda out, n: True)
    return steps


def kernels_per_step(
    model: Text2Semantic, batch: int, forward: Callable[..., torch.Tensor] | None = None
) -> int:
    """CUDA kernels one eager step launches (= kernels captured per graph step)."""
    step = forward or model
    from torch.profiler import ProfilerActivity, profile

    cfg = model.config
    packed = pack_inputs(request(batch), cfg).to(DEV)
    model.setup_caches(batch, packed.length + 16)
    rows = RowParams.of([SamplingParams()] * batch, cfg.vocab_size, DEV)
    seen = torch.zeros(batch, cfg.vocab_size, dtype=torch.bool, device=DEV)
    pos = torch.full((batch,), packed.length, dtype=torch.long, device=DEV)
    with torch.no_grad():
        logits = model.prefill(packed)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            token, _ = next_token(logits, seen, rows, cfg.eos, True)
            seen.scatter_(1, token[:, None], True)
            step(token, pos, kv_len=256)
            torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    label = "fused" if forward is not None else "eager"
    LOG[f"kernel_names_{label}"] = names
    by_time: dict[str, float] = {}
    for e in prof.events():
        if e.device_type.name == "CUDA":
            by_time[e.name[:70]] = by_time.get(e.name[:70], 0.0) + e.device_time
    top = sorted(by_time.items(), key=lambda kv: -kv[1])[:12]
    print(f"GPU time per {label} step by kernel (us):")
    for name, us in top:
        print(f"  {us:8.1f}  {name}")
    LOG[f"kernel_time_us_{label}"] = top
    return sum(1 for n in names if "memcpy" not in n.lower() and "memset" not in n.lower())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@torch.no_grad()
def check_gpt() -> None:
    """Greedy golden tokens (fp32 graphs) and teacher-forced logits (fp16/bf16 graphs)."""
    import numpy as np

    golden = np.load(ROOT / "tests/data/contract/golden_s1_v2.npz")
    prompt = torch.from_numpy(golden["prompts"])[0]
    item = T2SInput(torch.from_numpy(golden["x"])[0], torch.from_numpy(golden["bert"])[0], prompt)
    model = t2s_model(torch.float32)
    runner = T2SGraphRunner(model, 1, 512, max_new_tokens=256)
    (tokens,) = runner.generate_batch([item], SamplingParams(top_k=1), max_new_tokens=81)
    want = golden["tokens"][0][prompt.shape[0] :].tolist()
    same = tokens.tolist() == want
    row("GPT greedy fp32 graph == golden tokens", "yes" if same else "NO", f"{len(want)} tokens")
    # teacher forcing: 200 steps of fixed random tokens; reference = fp32 eager on the GPU
    steps = 200
    forced = torch.randint(0, 1024, (1, steps), generator=torch.Generator().manual_seed(1))
    packed = pack_inputs([item], model.config).to(DEV)
    model.setup_caches(1, 512)
    ref = [model.prefill(packed).float()]
    pos = torch.full((1,), packed.length, dtype=torch.long, device=DEV)
    for t in range(steps - 1):
        ref.append(model(forced[:, t].to(DEV), pos).float())
        pos += 1
    reference = torch.stack(ref, dim=1)  # (1, T, V)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        runner = T2SGraphRunner(t2s_model(dtype), 1, 512, max_new_tokens=256)
        got = runner.teacher_forced_logits(packed, forced)
        worst = max(rel(got[0, t], reference[0, t]) for t in range(steps))
        row(f"GPT teacher-forced rel err {str(dtype)[6:]}", f"{worst:.2e}", "max over 200 steps")
    del model, runner
    guarded("fused checks", check_fused, item, packed, forced, reference, want)


@torch.no_grad()
def check_fused(
    item: T2SInput,
    packed: PackedPrompt,
    forced: torch.Tensor,
    reference: torch.Tensor,
    want: list[int],
) -> None:
    """The Triton step: teacher-forced logits, greedy golden tokens, ragged batch vs unfused."""
    steps = forced.shape[1]
    for dtype in (torch.float32, torch.float16):
        m = t2s_model(dtype)
        runner = T2SGraphRunner(m, 1, 512, max_new_tokens=256, forward=FusedDecodeStep(m, 1))
        got = runner.teacher_forced_logits(packed, forced)
        worst = max(rel(got[0, t], reference[0, t]) for t in range(steps))
        row(f"GPT fused teacher-forced rel err {str(dtype)[6:]}", f"{worst:.2e}",
            "max over 200 steps")  # fmt: skip
        if dtype == torch.float32:
            (tokens,) = runner.generate_batch([item], SamplingParams(top_k=1), max_new_tokens=81)
            same = tokens.tolist() == want
            row("GPT greedy fp32 fused graph == golden", "yes" if same else "NO", "81 tokens")
    # batched rows with different lengths: fused == unfused, teacher-forced
    m = t2s_model(torch.float32)
    items = request(3)
    ragged = []
    for k, i in enumerate(items):
        assert i.prompt_tokens is not None
        ragged.append(
            T2SInput(
                i.phone_ids[: 40 + 15 * k], i.bert[:, : 40 + 15 * k], i.prompt_tokens[: 90 + 20 * k]
            )
        )
    items = ragged
    pk = pack_inputs(items, m.config)
    forced3 = torch.randint(0, 1024, (3, 50), generator=torch.Generator().manual_seed(2))
    base = T2SGraphRunner(m, 3, 512, max_new_tokens=64).teacher_forced_logits(pk, forced3)
    fused_runner = T2SGraphRunner(m, 3, 512, max_new_tokens=64, forward=FusedDecodeStep(m, 3))
    got3 = fused_runner.teacher_forced_logits(pk, forced3)
    row("GPT fused B=3 ragged vs unfused fp32", f"{rel(got3, base):.2e}", "50 forced steps")


def fused_step(
    model: Text2Semantic, batch: int, tuned: TuneResult | None, pdl: bool | None = None
) -> FusedDecodeStep:
    """The Triton step: default shapes, or ``tuned``'s (with its launch mode unless ``pdl``)."""
    if tuned is None:
        return FusedDecodeStep(model, batch, pdl=bool(pdl))
    return tuned.step(model, batch, pdl=pdl)


def bench_tune(model: Text2Semantic, batch: int) -> TuneResult:
    """``kernels.tune_step``: every launch shape of the fused step's kernels, timed."""
    model.setup_caches(batch, PHONES + PROMPT + N_TOK + 64)
    t0 = time.time()
    result = tune_step(model, batch, slots=PHONES + PROMPT + N_TOK // 2)
    default = FusedDecodeStep(model, batch)
    LOG[f"tune_b{batch}"] = result.timings
    by_kernel: dict[str, list[tuple[str, float]]] = {}
    for kernel, label, t in result.timings:
        by_kernel.setdefault(kernel, []).append((label, t))
    for kernel, tried in by_kernel.items():
        if kernel == "whole step":  # every launch mode, for the record
            for label, t in tried:
                row(
                    f"tuned B={batch}: whole step, {label}",
                    f"{1e6 * t:.1f} us",
                    "graph, no sampling",
                )
            continue
        label, best = min(tried, key=lambda lt: lt[1])
        shape = kernel.split()[-1]
        if "x" in shape:  # a GEMV: the default's launch shape
            n, k = (int(v) for v in shape.split("x"))
            d = default.gemv_configs[(n, k)]
            want = f"rows {d.block_n}, warps {d.num_warps}"
        else:
            a = default.attention_config
            d = default.gemv_configs[(model.config.hidden_dim, model.config.hidden_dim)]
            want = f"splits {a.splits}, slots/block {a.block_s}, warps {a.num_warps}; combine rows {d.block_n}, warps 4"
        base = dict(tried).get(want)
        row(f"tuned B={batch}: {kernel}", f"{1e6 * best:.2f} us",
            f"{label}; default {1e6 * base:.2f} us" if base else label)  # fmt: skip
    row(f"tuning B={batch} (compile + time every candidate)", f"{time.time() - t0:.0f} s",
        f"{len(result.timings)} candidates")  # fmt: skip
    return result


def bench_decode(
    model: Text2Semantic,
    fused: bool,
    tuned: TuneResult | None,
    label: str,
    pdl: bool | None = None,
) -> tuple[float, float]:
    """The product's decode loop at one row (the batcher, 4 steps per replay and host sync,
    one replay queued ahead): seconds per token without the prefill, and the prefill (row
    admission) alone."""
    cfg = model.config
    forward = fused_step(model, 1, tuned, pdl) if fused else None
    sampler = (
        FusedSampler(cfg.vocab_size, cfg.eos, EOS_BLOCKED_STEPS, 1, DEV, pdl=forward.pdl)
        if forward is not None
        else None
    )
    b = ContinuousBatcher(model, 1, PHONES + PROMPT + N_TOK + 64, max_new_tokens=N_TOK + 8,
                          steps_per_sync=4, forward=forward, sampler=sampler)  # fmt: skip
    b.capture(PHONES + PROMPT + N_TOK + 8)
    (item,) = request(1)
    best_step, best_open = math.inf, math.inf
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        stream = b.open(item, SamplingParams(), N_TOK)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        replays = N_TOK // 4 - 2
        for _ in range(replays):
            b.advance()
        t2 = time.perf_counter()
        stream.close()
        best_open, best_step = min(best_open, t1 - t0), min(best_step, (t2 - t1) / (4 * replays))
    row(f"GPT fp16 B=1 decode only, {label}", f"{1 / best_step:,.0f} tok/s",
        f"{1e6 * best_step:.0f} us/token incl sampling + 1 host sync per 4")  # fmt: skip
    row(f"GPT fp16 B=1 prefill {PHONES + PROMPT} slots, {label}", f"{1e3 * best_open:.1f} ms",
        "row admission, once per sentence: the prefill's graph (64-slot buckets)")  # fmt: skip
    return best_step, best_open


def bench_prefill_graphs(model: Text2Semantic) -> None:
    """One request's prefill (230 slots): eager (efficient SDPA) against the graph of its
    64-slot bucket (``fast.PrefillGraphs``, what a one-row batch uses), and the logits."""
    from wyoming_sovits.fast import PrefillGraphs
    from wyoming_sovits.generate import dynamic_shape_attention

    model.setup_caches(1, 512)
    packed = pack_inputs(request(1), model.config).to(DEV)
    graphs = PrefillGraphs(model, 64)
    with torch.no_grad():
        t0 = time.perf_counter()
        graphs(packed)  # captures
        torch.cuda.synchronize()
        capture = time.perf_counter() - t0

        def eager() -> None:
            with dynamic_shape_attention():
                model.prefill(packed)

        t_e = cuda_time(eager, reps=5)
        t_g = cuda_time(partial(graphs, packed), reps=5)
        want = PrefillGraphs(model, 64, use_graphs=False)(packed)[0]
        got = graphs(packed)[0]
    row(f"GPT fp16 prefill {packed.length} slots: eager / graph", f"{1e3 * t_e:.2f} / {1e3 * t_g:.2f} ms",
        f"capture {1e3 * capture:.0f} ms; graph vs eager padded rel {rel(got, want):.1e}; "
        f"failed: {graphs.failed}")  # fmt: skip


def bench_prefill_shapes(model: Text2Semantic) -> None:
    """Prefill at prompt lengths this process has not seen: the first call at each length
    against a repeat, with the default SDPA backends and with memory-efficient attention
    only (a backend that builds a plan per new shape makes every new sentence pay it)."""
    from torch.nn.attention import sdpa_kernel

    cfg = model.config
    model.setup_caches(1, 512)
    backends = {
        "default SDPA": None,
        "efficient SDPA": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    }
    for b_index, (name, allowed) in enumerate(backends.items()):
        first: list[float] = []
        again: list[float] = []
        for j in range(6):
            phones = 61 + 13 * j + 97 * b_index  # lengths no other section used
            g = torch.Generator().manual_seed(j)
            item = T2SInput(torch.randint(0, 732, (phones,), generator=g),
                            torch.randn(1024, phones, generator=g),
                            torch.randint(0, 1024, (PROMPT,), generator=g))  # fmt: skip
            packed = pack_inputs([item], cfg).to(DEV)
            for out in (first, again):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.no_grad():
                    if allowed is None:
                        model.prefill(packed)
                    else:
                        with sdpa_kernel(allowed):
                            model.prefill(packed)
                torch.cuda.synchronize()
                out.append(time.perf_counter() - t0)
        row(f"GPT prefill at a new length, {name}", f"{1e3 * statistics.median(first):.1f} ms",
            f"median of 6 lengths; repeat {1e3 * statistics.median(again):.1f} ms")  # fmt: skip


def bench_sampler(model: Text2Semantic) -> None:
    """The fused sampler alone at one row (graph-replayed): warps per program, and top-k
    by the walk (k <= 64) against the sort (k > 64)."""
    from wyoming_sovits.kernels import _graph_time

    cfg = model.config
    v = cfg.vocab_size
    g = torch.Generator(device=DEV).manual_seed(0)
    logits = torch.randn(1, v, device=DEV, generator=g) * 3
    seen = torch.zeros(1, v, dtype=torch.bool, device=DEV)
    step = torch.full((1,), 20, dtype=torch.long, device=DEV)
    ones = torch.ones(1, 1, device=DEV)
    for warps in (4, 8, 16):
        sampler = FusedSampler(v, cfg.eos, EOS_BLOCKED_STEPS, 1, DEV, num_warps=warps)
        for k in (1, 15, 100):
            top_k = torch.full((1,), k, dtype=torch.long, device=DEV)
            call = partial(sampler, logits, seen, step, top_k, ones, ones, ones, False)
            t = _graph_time(call, DEV)
            row(f"sampler B=1, {warps} warps, top_k {k}", f"{1e6 * t:.2f} us",
                "walk" if k <= 64 else "sort")  # fmt: skip


def check_pdl(model: Text2Semantic, tuned: TuneResult | None) -> None:
    """Programmatic dependent launch must not change a bit: 64 graph-replayed steps of the
    tuned step with and without it, same tokens, same cache contents."""
    cfg = model.config
    out = []
    for pdl in (False, True):
        step = fused_step(model, 1, tuned, pdl)
        runner = T2SGraphRunner(model, 1, PHONES + PROMPT + 80, max_new_tokens=72, forward=step)
        packed = pack_inputs(request(1), cfg)
        forced = torch.randint(0, 1024, (1, 64), generator=torch.Generator().manual_seed(5))
        out.append(runner.teacher_forced_logits(packed, forced).float())
    same = torch.equal(out[0], out[1])
    row("Triton step with PDL == without", "yes" if same else "NO",
        f"64 teacher-forced steps; max diff {(out[0] - out[1]).abs().max().item():.2e}")  # fmt: skip


def profile_product_step(model: Text2Semantic, tuned: TuneResult | None) -> None:
    """Kernels and GPU time per kernel of one product decode step (fused step + sampler +
    the batcher's bookkeeping), launched eagerly so the profiler sees each kernel."""
    from torch.profiler import ProfilerActivity, profile

    cfg = model.config
    b = ContinuousBatcher(model, 1, PHONES + PROMPT + N_TOK + 64, max_new_tokens=N_TOK,
                          steps_per_sync=1, use_graphs=False, forward=fused_step(model, 1, tuned),
                          sampler=FusedSampler(cfg.vocab_size, cfg.eos, EOS_BLOCKED_STEPS, 1, DEV))  # fmt: skip
    stream = b.open(request(1)[0], SamplingParams(), N_TOK)
    for _ in range(3):
        b.advance()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        b.advance()
        torch.cuda.synchronize()
    stream.close()
    by_kind: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type.name != "CUDA" or "memcpy" in e.name.lower():
            continue
        kind = e.name if e.name.endswith("_kernel") else e.name[:40]
        by_kind.setdefault(kind, []).append(e.device_time)
    total = sum(sum(v) for v in by_kind.values())
    count = sum(len(v) for v in by_kind.values())
    row("Product step (fused, tuned): kernels", f"{count}", f"GPU busy {total:.0f} us per token")
    for kind, times in sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))[:8]:
        row(f"  {kind[:42]}", f"{sum(times):.0f} us",
            f"{len(times)} launches, {sum(times) / len(times):.2f} us each")  # fmt: skip
    LOG["product_step_kernels"] = {k: v for k, v in by_kind.items()}


def forward_time(fwd: Callable[..., object], batch: int, kv_len: int = 512) -> float:
    """Seconds per forward (no sampling) at ``batch`` rows, 32 steps in one graph, every
    row at slot PHONES + PROMPT."""
    tok = torch.zeros(batch, dtype=torch.long, device=DEV)
    pos = torch.full((batch,), PHONES + PROMPT, dtype=torch.long, device=DEV)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad():
        fwd(tok, pos, kv_len=kv_len)
        torch.cuda.synchronize()
        with torch.cuda.graph(g):
            for _ in range(32):
                fwd(tok, pos, kv_len=kv_len)
    return cuda_time(g.replay, reps=5) / 32


def bench_fused(model: Text2Semantic, batch: int, tuned: TuneResult | None = None) -> float:
    """Seconds for N_TOK tokens with the Triton step in the graph; also forward-only time."""
    inputs = request(batch)
    fused = fused_step(model, batch, tuned)
    runner = T2SGraphRunner(
        model, batch, PHONES + PROMPT + N_TOK + 8, max_new_tokens=N_TOK, forward=fused
    )
    runner.capture(batch, PHONES + PROMPT, N_TOK)
    t = cuda_time(lambda: graph_decode(runner, inputs, N_TOK))
    row(f"GPT fp16 B={batch} fused Triton + graph", f"{batch * N_TOK / t:,.0f} tok/s",
        f"{1e6 * t / N_TOK:.0f} us/step incl prefill+sampling")  # fmt: skip
    # forward alone (no sampling), 32 steps in one graph, same buffers
    for fwd, name in ((fused, "fused"), (model, "unfused")):
        tf = forward_time(fwd, batch)
        row(f"GPT fp16 B={batch} {name} forward only (graph)", f"{1e6 * tf:.0f} us/step",
            "no sampling")  # fmt: skip
    return t


def bench_batcher(
    model: Text2Semantic,
    batch: int,
    fused: bool,
    together: bool = False,
    step: FusedDecodeStep | None = None,
    name: str = "",
) -> float:
    """Continuous batching: ``batch`` rows admitted one by one (``together``: opened at
    once, one batched prefill, as the pipeline does with several streams), then N_TOK
    steps for all. ``step``: this Triton step (else the default shapes'); returns seconds."""
    forward = (step or FusedDecodeStep(model, batch)) if fused else None
    cfg = model.config
    sampler = (
        FusedSampler(cfg.vocab_size, cfg.eos, EOS_BLOCKED_STEPS, batch, DEV) if fused else None
    )
    # every replay the whole batch, as before the row buckets (one step built for ``batch``
    # rows; server_bench measures the product's buckets: its "of64" and "whole" modes)
    b = ContinuousBatcher(model, batch, PHONES + PROMPT + N_TOK + 64, max_new_tokens=N_TOK + 8,
                          steps_per_sync=4, forward=forward, sampler=sampler,
                          defer_prefill=together, buckets=(batch,))  # fmt: skip
    b.capture(PHONES + PROMPT + N_TOK + 8)

    def run() -> None:
        streams = [b.open(item, SamplingParams(), N_TOK) for item in request(batch)]
        for _ in range(N_TOK // 4):
            b.advance()
        for stream in streams:
            stream.close()

    t = cuda_time(run, reps=3)
    label = name or ("Triton step + sampler" if fused else "torch")
    label += ", one prefill" if together else ""
    row(f"GPT fp16 batcher B={batch} ({label})", f"{batch * N_TOK / t:,.0f} tok/s",
        f"{1e3 * t:.0f} ms incl {batch} prefills; {batch * N_TOK / t / 25:,.0f}x real time")  # fmt: skip
    return t


def bench_gpt(
    model: Text2Semantic, label: str, batch: int, eager_steps: int
) -> tuple[float, float]:
    """Seconds for N_TOK tokens: eager (extrapolated from ``eager_steps``) and graphs."""
    inputs = request(batch)
    t_eager = cuda_time(lambda: eager_decode(model, inputs, eager_steps), reps=1)
    runner = T2SGraphRunner(model, batch, PHONES + PROMPT + N_TOK + 8, max_new_tokens=N_TOK)
    runner.capture(batch, PHONES + PROMPT, N_TOK)
    t_graph = cuda_time(lambda: graph_decode(runner, inputs, N_TOK))
    tps_e = batch * eager_steps / t_eager
    tps_g = batch * N_TOK / t_graph
    row(
        f"GPT {label} B={batch} eager",
        f"{tps_e:,.0f} tok/s",
        f"{1e6 * t_eager / eager_steps:.0f} us/step",
    )
    row(
        f"GPT {label} B={batch} CUDA graph",
        f"{tps_g:,.0f} tok/s",
        f"{1e6 * t_graph / N_TOK:.0f} us/step incl prefill+sampling",
    )
    return t_eager * N_TOK / eager_steps, t_graph


def bench_sovits(model: SoVITS, ge: torch.Tensor, label: str) -> dict[int, tuple[float, float]]:
    """Seconds per decode of 1 s and 10 s: eager and graph."""
    graphs = SoVITSGraphs(model, noise_scale=0.5)
    out: dict[int, tuple[float, float]] = {}
    for n_tok, n_ph in ((25, 20), (250, 120)):
        codes = torch.randint(0, 1024, (n_tok,), device=DEV)
        text = torch.randint(0, 732, (n_ph,), device=DEV)
        with torch.no_grad():
            t_e = cuda_time(partial(model.decode, codes[None, None], text[None], ge), reps=5)
        t_g = cuda_time(partial(graphs.decode, codes, text, ge), reps=10)
        row(f"SoVITS {label} {n_tok / 25:g} s eager", f"{1e3 * t_e:.2f} ms")
        row(f"SoVITS {label} {n_tok / 25:g} s CUDA graph", f"{1e3 * t_g:.2f} ms", "bucketed")
        out[n_tok] = (t_e, t_g)
    # padding check: graph (padded to a bucket) vs eager exact length, no noise
    exact = SoVITSGraphs(model, noise_scale=0.0)
    codes = torch.randint(0, 1024, (90,), device=DEV)  # padded to the 100 bucket
    text = torch.randint(0, 732, (60,), device=DEV)
    with torch.no_grad():
        ref = model.decode(codes[None, None], text[None], ge, noise_scale=0.0)[0, 0]
    got = exact.decode(codes, text, ge)
    err = got.float() - ref.float()
    tail = 20 * 1280  # last 0.8 s
    snr_body = 10 * math.log10(
        ref[:-tail].float().pow(2).sum() / err[:-tail].pow(2).sum().clamp_min(1e-20)
    )
    snr_all = 10 * math.log10(ref.float().pow(2).sum() / err.pow(2).sum().clamp_min(1e-20))
    row(
        f"SoVITS {label} padded graph vs exact eager",
        f"{snr_all:.1f} dB",
        f"{snr_body:.1f} dB before last 0.8 s",
    )
    return out


def graph_kernels(graphs: SoVITSGraphs, codes: torch.Tensor, text: torch.Tensor,
                  ge: torch.Tensor) -> tuple[int, dict[str, int]]:  # fmt: skip
    """Kernels one graph replay runs (the profiler sees a replay's kernel nodes), by class."""
    from torch.profiler import ProfilerActivity, profile

    graphs.decode(codes, text, ge)  # captured before the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        graphs.decode(codes, text, ge)
        torch.cuda.synchronize()
    kinds: dict[str, int] = {}
    for e in prof.events():
        if e.device_type.name == "CUDA" and "memcpy" not in e.name.lower():
            kinds[e.name[:40]] = kinds.get(e.name[:40], 0) + 1
    return sum(kinds.values()), kinds


def bench_sovits_variants(ge: torch.Tensor) -> None:
    """The SoVITS graphs capturing the plain decode against the decode compiled by
    TorchInductor first (``SoVITSGraphs(compile=True)``, dynamic shapes): time per replay,
    kernels per 1 s replay, the first call of each bucket (compiling and capturing), the
    padded graph against the exact eager decode, and several streams in one replay."""
    model = sovits_model(torch.float16)
    variants = {"plain": SoVITSGraphs(model), "compiled": SoVITSGraphs(model, compile=True)}
    exact = SoVITSGraphs(model, noise_scale=0.0, compile=True)
    codes = torch.randint(0, 1024, (90,), device=DEV)  # padded to the 100 bucket
    text = torch.randint(0, 732, (60,), device=DEV)
    with torch.no_grad():
        ref = model.decode(codes[None, None], text[None], ge, noise_scale=0.0)[0, 0].float()
    t0 = time.perf_counter()
    err = exact.decode(codes, text, ge).float() - ref
    first = time.perf_counter() - t0
    snr = 10 * math.log10(ref.pow(2).sum() / err.pow(2).sum().clamp_min(1e-20))
    row("SoVITS compiled graph, padded vs exact eager", f"{snr:.1f} dB",
        f"first call (compile + capture) {first:.0f} s; failed: {exact.compile_failed}")  # fmt: skip
    for rows, n_tok, n_ph in ((1, 25, 20), (1, 250, 120), (16, 25, 20), (64, 25, 20)):
        batch = [
            (torch.randint(0, 1024, (n_tok,), device=DEV),
             torch.randint(0, 732, (n_ph,), device=DEV), ge,
             torch.randn(1, model.cfg.inter_channels, 2 * n_tok, device=DEV), 0.5)
            for _ in range(rows)
        ]  # fmt: skip
        for name, graphs in variants.items():
            run = partial(graphs.decode_rows, batch)
            t0 = time.perf_counter()
            run()
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            t = cuda_time(run, reps=10)
            note = f"first call {first:.1f} s"
            if (rows, n_tok) == (1, 25):
                note += f"; {graph_kernels(graphs, batch[0][0], batch[0][1], ge)[0]} kernels"
            what = f"{n_tok / 25:g} s" if rows == 1 else f"{rows} streams x {n_tok / 25:g} s"
            row(f"SoVITS {what} graph, {name}", f"{1e3 * t:.2f} ms", note)
            LOG[f"sovits {what} {name}"] = t
    print(f"compile failed: {variants['compiled'].compile_failed}", flush=True)


def bench_sovits_batch(model: SoVITS, ge: torch.Tensor) -> None:
    """Many streams' decodes: ``pipeline.decode_batch`` (one eager batched call, what the
    pipeline runs when 4+ streams reach a decode point together) vs one graph replay per
    stream; and the 1 s graph decode's kernels by class (profile evidence)."""
    from torch.profiler import ProfilerActivity, profile

    graphs = SoVITSGraphs(model, noise_scale=0.5)
    for rows, n_tok in ((4, 25), (16, 25), (64, 25), (16, 100), (64, 100)):
        n_ph = max(20, n_tok // 2)
        items = [
            (
                torch.randint(0, 1024, (n_tok,), device=DEV),
                torch.randint(0, 732, (n_ph,), device=DEV),
            )
            for _ in range(rows)
        ]
        noise = torch.randn(1, model.cfg.inter_channels, 2 * n_tok, device=DEV)
        batch = [(c, t, ge, noise, 0.5) for c, t in items]
        t_b = cuda_time(partial(decode_batch, model, batch), reps=3)

        def one_by_one(items: list[tuple[torch.Tensor, torch.Tensor]] = items) -> None:
            for c, t in items:
                graphs.decode(c, t, ge)

        t_g = cuda_time(one_by_one, reps=3)
        row(f"SoVITS {rows} streams x {n_tok / 25:g} s: batched eager", f"{1e3 * t_b:.1f} ms",
            f"one graph per stream {1e3 * t_g:.1f} ms")  # fmt: skip
        if graphs.fits(n_tok, n_ph, rows):
            t0 = time.perf_counter()
            graphs.decode_rows(batch)  # the capture, once per bucket
            torch.cuda.synchronize()
            t_cap = time.perf_counter() - t0
            t_r = cuda_time(partial(graphs.decode_rows, batch), reps=3)
            row(f"SoVITS {rows} streams x {n_tok / 25:g} s: batched graph", f"{1e3 * t_r:.1f} ms",
                f"capture {1e3 * t_cap:.0f} ms, once per bucket")  # fmt: skip
    codes = torch.randint(0, 1024, (25,), device=DEV)
    text = torch.randint(0, 732, (20,), device=DEV)
    with torch.no_grad():
        model.decode(codes[None, None], text[None], ge)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model.decode(codes[None, None], text[None], ge)
            torch.cuda.synchronize()
    by_kind: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type.name == "CUDA" and "memcpy" not in e.name.lower():
            by_kind.setdefault(e.name[:48], []).append(e.device_time)
    count = sum(len(v) for v in by_kind.values())
    busy = sum(sum(v) for v in by_kind.values())
    row("SoVITS 1 s decode: kernels", f"{count}", f"GPU busy {busy:.0f} us (eager launch order)")
    for kind, times in sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))[:6]:
        row(f"  {kind[:42]}", f"{sum(times):.0f} us", f"{len(times)} launches")
    LOG["sovits_1s_kernels"] = by_kind


DecodeRows = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float]]


def _whole_cut(graphs: SoVITSGraphs, batch: DecodeRows, sample: int) -> list[torch.Tensor]:
    return [a[sample:] for a in graphs.decode_rows(batch)]


def _eager_rows(model: SoVITS, batch: DecodeRows, starts: list[int]) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in decode_batch(model, batch, starts)]


def bench_sovits_windows(model: SoVITS, ge: torch.Tensor) -> None:
    """Streamed decodes of many rows at once, as ``pipeline`` queues them: every row at the
    same streamed decode point (12 to 240 tokens, the audio of the decode before it sent),
    decoded whole (one whole-prefix graph, or eagerly where no whole bucket holds the
    rows) against only the unsent frames (``decode_windows``) in the last session's window
    buckets and in the product's (``fast.WINDOW_BUCKETS``, which the streamed windows fill:
    no masks): time per call, whether the vocoder graph was masked, the first calls
    (captures), the latents replay, and the SNR of the product's samples against the
    whole decode's."""
    from wyoming_sovits.pipeline import STREAM_HOLD_TOKENS

    last = SoVITSGraphs(model, noise_scale=0.5,
                        window_buckets=(32, 64, 96, 128, 192, 256, 384, 512, 768, 1024))  # fmt: skip
    product = SoVITSGraphs(model, noise_scale=0.5)
    points = ((64, 12, 0), (64, 36, 12), (64, 72, 36), (32, 144, 72), (16, 240, 144),
              (2, 36, 12), (4, 36, 12), (16, 36, 12), (8, 72, 36))  # fmt: skip
    for rows, n_tok, before in points:
        start = max(0, before - STREAM_HOLD_TOKENS) * model.cfg.frames_per_token
        batch: DecodeRows = [
            (torch.randint(0, 1024, (n_tok,), device=DEV),
             torch.randint(0, 732, (40,), device=DEV), ge,
             torch.randn(1, model.cfg.inter_channels, 2 * n_tok, device=DEV), 0.5)
            for _ in range(rows)
        ]  # fmt: skip
        starts = [start] * rows
        window = product.window_frames(n_tok, start)
        up = model.cfg.upsample_factor
        whole: Callable[[], list[torch.Tensor]]
        if product.fits(n_tok, 40, rows):
            label, whole = "whole graph", partial(_whole_cut, product, batch, start * up)
        else:
            label, whole = "eager", partial(_eager_rows, model, batch, starts)
        if not product.fits_windows(n_tok, 40, rows, window):
            row(f"SoVITS {rows} streams at {n_tok} tokens: windows", "no bucket", "")
            continue
        runs = [whole, partial(last.decode_windows, batch, starts),
                partial(product.decode_windows, batch, starts)]  # fmt: skip
        firsts = []
        for run in runs:
            t0 = time.perf_counter()
            run()
            torch.cuda.synchronize()
            firsts.append(time.perf_counter() - t0)
        times = [cuda_time(run, reps=5) for run in runs]
        latents = cuda_time(product._latents[product._key(n_tok, 40, rows)][0], reps=5)
        ref = torch.cat([a.to(DEV) for a in whole()]).float()
        err = torch.cat(product.decode_windows(batch, starts)).float() - ref
        snr = 10 * math.log10(ref.pow(2).sum() / err.pow(2).sum().clamp_min(1e-20))
        masks = "/".join("masked" if k[2] else "unmasked"
                         for graphs in (last, product) for k in graphs.captured_windows
                         if k[0] >= rows and k[1] >= window)  # fmt: skip
        row(f"SoVITS {rows} x {n_tok} tok ({window} fr): {label} / last / product windows",
            " / ".join(f"{1e3 * t:.1f}" for t in times) + " ms",
            f"x{times[0] / times[2]:.2f} (last x{times[0] / times[1]:.2f}); {masks}; latents "
            f"{1e3 * latents:.1f} ms; {snr:.1f} dB; first calls "
            + " / ".join(f"{f:.2f}" for f in firsts) + " s")  # fmt: skip
        LOG[f"sovits windows {rows}x{n_tok}"] = (times, latents, snr)
        for graphs in (last, product):  # the next point's captures are its own
            graphs._vocoders.clear()


def sovits_only() -> None:
    """``python3 bench/gpu_bench.py sovits``: the SoVITS rows only (a short device run)."""
    sovits = sovits_model(torch.float16)
    with torch.no_grad():
        spec = torch.rand(1, 1025, 200, device=DEV, dtype=torch.float16)
        ge = sovits.encode_reference(spec, torch.randn(1, 20480, device=DEV, dtype=torch.float16))
    bench_sovits(sovits, ge, "fp16")
    guarded("SoVITS windows", bench_sovits_windows, sovits, ge)
    guarded("SoVITS variants", bench_sovits_variants, ge)
    print_table()


def windows_only() -> None:
    """``python3 bench/gpu_bench.py windows``: the windowed streamed decodes only."""
    sovits = sovits_model(torch.float16)
    with torch.no_grad():
        spec = torch.rand(1, 1025, 200, device=DEV, dtype=torch.float16)
        ge = sovits.encode_reference(spec, torch.randn(1, 20480, device=DEV, dtype=torch.float16))
    guarded("SoVITS windows", bench_sovits_windows, sovits, ge)
    print_table()


@torch.no_grad()
def prefill_only() -> None:
    """``python3 bench/gpu_bench.py prefill``: the batched prefill as a burst of streams
    has it (one call, rows scattered into a 64-row cache): packing on the device, with
    zero BERT features (English) and with nonzero ones, and the prefill alone, at 1, 16
    and 64 rows; then the prefill's GPU time per operator at 64 rows (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from wyoming_sovits.generate import dynamic_shape_attention

    gpt = t2s_model(torch.float16)
    cfg = gpt.config
    gpt.setup_caches(64, PHONES + PROMPT + N_TOK + 64)
    for batch in (1, 16, 64):
        items = request(batch)
        zero = [T2SInput(i.phone_ids, torch.zeros_like(i.bert), i.prompt_tokens) for i in items]
        rows = list(range(batch))
        t_zero = cuda_time(lambda: pack_inputs(zero, cfg, DEV), reps=5)  # noqa: B023
        t_bert = cuda_time(lambda: pack_inputs(items, cfg, DEV), reps=5)  # noqa: B023
        packed = pack_inputs(items, cfg, DEV)

        def prefill() -> None:
            with torch.no_grad(), dynamic_shape_attention():
                gpt.prefill(packed, rows=rows)  # noqa: B023

        t_prefill = cuda_time(prefill, reps=5)
        row(f"prefill B={batch} x {packed.length} slots", f"{1e3 * t_prefill:.1f} ms",
            f"packing on the device: zero BERT {1e3 * t_zero:.1f} ms, "
            f"nonzero {1e3 * t_bert:.1f} ms")  # fmt: skip
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        prefill()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20), flush=True)
    print_table()


def _graphed(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """``fn`` captured in a CUDA graph (warmed up once on a side stream): its replay, output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def vocoder_inputs(
    cfg: VitsConfig, rows: int, frames: int, masked: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """fp16 latents and speaker embeddings for the vocoder benches; ``masked``: the second
    half of the rows 2/3 as long (their lengths), else no lengths."""
    z = 0.5 * torch.randn(rows, cfg.inter_channels, frames, device=DEV, generator=g).half()
    ge = 0.1 * torch.randn(rows, cfg.gin_channels, 1, device=DEV, generator=g).half()
    if not masked:
        return z, ge, None
    lengths = torch.full((rows,), frames, device=DEV)
    lengths[rows // 2 :] = frames * 2 // 3
    return z, ge, lengths


VOCODER_SHAPES = ((64, 24, False), (64, 24, True), (64, 96, True), (16, 48, False), (8, 24, False),
                  (4, 48, True), (2, 24, False), (2, 100, False), (1, 100, False))  # fmt: skip


def vocoder_only() -> None:
    """``python3 bench/gpu_bench.py vocoder``: the vocoder alone (fp16, CUDA graphs) as the
    1-D convolutions it loads as, against channels-last 2-D ones
    (``Generator.use_channels_last``'s twin, which the product uses on CUDA from two
    rows): 64 rows of first chunks (24 frames, with and without lengths), 64 rows of later
    windows, 16 to 2 rows, one row of 2 s; the largest difference of the two layouts'
    audio. (``cudnn.benchmark`` changed neither, sixth session.)"""
    import copy

    model = sovits_model(torch.float16)
    plain = model.dec
    if plain._twin:
        raise RuntimeError("the bench's model must load as 1-D convolutions")
    last = copy.deepcopy(plain)
    last.use_channels_last(min_rows=1)  # every batch size through the 2-D twin
    cfg = model.cfg
    g = torch.Generator(device=DEV).manual_seed(0)
    for rows, frames, masked in VOCODER_SHAPES:
        z, ge, lengths = vocoder_inputs(cfg, rows, frames, masked, g)
        times, outs = {}, {}
        for name, dec in (("1-D", plain), ("channels-last", last)):
            replay, out = _graphed(partial(dec, z, ge, lengths))
            times[name] = cuda_time(replay, reps=10)
            outs[name] = out.float()
        base, fast = times["1-D"], times["channels-last"]
        audio_s = rows * frames * cfg.upsample_factor / 32000
        diff = (outs["1-D"] - outs["channels-last"]).abs().max().item()
        row(f"vocoder {rows} x {frames} frames{' masked' if masked else ''}, 1-D",
            f"{1e3 * base:.2f} ms",
            f"{audio_s / base:.0f}x real time; channels-last {1e3 * fast:.2f} ms "
            f"({base / fast:.2f}x); max |diff| {diff:.1e}")  # fmt: skip
    print_table()


VCONV_CANDIDATES: dict[int, list[tuple[int, int, int, int, int, bool]]] = {
    384: [(64, 128, 64, 4, 3, False), (64, 128, 128, 8, 3, False), (64, 256, 64, 8, 3, False)],
    192: [(128, 256, 64, 8, 3, False), (128, 256, 64, 8, 4, False), (64, 256, 64, 8, 3, False),
          (128, 256, 128, 8, 3, True)],
    96: [(64, 128, 32, 4, 4, False), (64, 128, 64, 4, 3, True), (128, 128, 64, 8, 3, True),
         (64, 128, 128, 8, 3, True), (64, 128, 32, 4, 4, True)],
    48: [(128, 64, 16, 4, 3, False), (128, 64, 64, 4, 3, True), (128, 64, 32, 4, 3, True),
         (256, 64, 64, 8, 3, True), (64, 64, 64, 4, 3, True)],
    24: [(256, 32, 32, 4, 3, False), (256, 32, 64, 4, 3, True), (256, 32, 32, 4, 3, True),
         (128, 32, 64, 4, 3, True), (512, 32, 64, 8, 3, True), (256, 32, 128, 8, 3, True)],
}  # fmt: skip
VCONV_SHAPES = ((64, 96, True), (64, 96, False), (64, 24, False), (16, 48, False),
                (4, 48, True), (2, 24, False), (1, 100, False), (1, 24, False))  # fmt: skip


def vconv_only() -> None:
    """``python3 bench/gpu_bench.py vconv``: the vocoder's residual blocks through the fused
    Triton convolutions (``vocoder_kernels``) against cuDNN's channels-last ones. Per
    upsampling stage at 64 rows x 96 latent frames: the stage's blocks as the product runs
    them and each candidate launch shape; then the whole vocoder (graphs) 1-D,
    channels-last, and channels-last with fused blocks (default and the best shapes found),
    with the largest difference from the channels-last audio; and where the channels-last
    vocoder's GPU time goes at 64 x 96 (profiler, by kernel)."""
    import copy

    from torch.profiler import ProfilerActivity, profile

    from wyoming_sovits.models.vits_modules import LRELU_SLOPE, _keep_mask, _stage_average
    from wyoming_sovits.vocoder_kernels import DEFAULT_CONFIGS, ConvConfig, FusedResBlocks

    torch.backends.cudnn.allow_tf32 = False
    model = sovits_model(torch.float16)
    cfg = model.cfg
    plain = model.dec
    last = copy.deepcopy(plain)
    last.use_channels_last(min_rows=1)
    twin = last._twin[0]
    n = twin.n_kernels
    g = torch.Generator(device=DEV).manual_seed(0)
    best: dict[int, ConvConfig] = {}
    rows, frames, rate = 64, 96, 1
    for i, up_rate in enumerate(twin.upsample_rates):
        rate *= up_rate
        blocks: list[Any] = list(twin.resblocks[i * n : (i + 1) * n])
        channels = int(blocks[0].convs1[0].in_channels)
        positions = frames * rate
        x = 0.5 * torch.randn(rows, channels, 1, positions, device=DEV, generator=g).half()
        x = x.contiguous(memory_format=torch.channels_last)
        lengths = torch.full((rows,), positions, device=DEV, dtype=torch.int32)
        lengths[rows // 2 :] = positions * 2 // 3
        keep = _keep_mask(lengths, x)

        replay, ref = _graphed(partial(_stage_average, blocks, x, keep))
        base = cuda_time(replay, reps=10)
        flops = (
            2
            * rows
            * positions
            * channels
            * channels
            * sum(2 * len(b.convs1) * b.convs1[0].kernel_size[-1] for b in blocks)
        )
        row(f"vconv stage {i} ({channels} ch x {positions}), cuDNN", f"{1e3 * base:.3f} ms",
            f"{flops / base / 1e12:.0f} TFLOP/s")  # fmt: skip
        times = {}
        for shape in VCONV_CANDIDATES.get(channels, []):
            config = ConvConfig(*shape)
            fused = FusedResBlocks(blocks, LRELU_SLOPE, config)
            try:
                replay_f, out = _graphed(partial(fused, x, lengths))
                t = cuda_time(replay_f, reps=10)
            except Exception as exc:  # a launch shape the GPU cannot hold
                row(f"vconv stage {i} {shape}", "failed", type(exc).__name__)
                continue
            times[config] = t
            err = rel(out.float(), ref.float())
            row(f"vconv stage {i} {shape}", f"{1e3 * t:.3f} ms",
                f"{base / t:.2f}x cuDNN, {flops / t / 1e12:.0f} TFLOP/s, rel err {err:.1e}")  # fmt: skip
        if times and min(times.values()) < base:
            best[channels] = min(times, key=times.__getitem__)
        row(f"vconv stage {i} best", str(best.get(channels, "cuDNN")), "")
    print("best configs:", best, flush=True)
    for rows_, frames_, masked in VCONV_SHAPES:
        z, ge, lens = vocoder_inputs(cfg, rows_, frames_, masked, g)
        results = {}
        for name, dec, configs in (("1-D", plain, None), ("channels-last", last, None),
                                   ("fused", last, DEFAULT_CONFIGS), ("fused best", last, best)):  # fmt: skip
            if configs is not None:
                dec.use_fused_resblocks(configs)
            try:
                replay, out = _graphed(partial(dec, z, ge, lens))
                results[name] = (cuda_time(replay, reps=10), out.float())
            except Exception as exc:
                row(f"vocoder {rows_} x {frames_} {name}", "failed", type(exc).__name__)
            dec.use_plain_resblocks()
        audio_s = rows_ * frames_ * cfg.upsample_factor / 32000
        ref_out = results["channels-last"][1]
        for name, (t, out) in results.items():
            diff = (out - ref_out).abs().max().item()
            row(f"vocoder {rows_} x {frames_}{' masked' if masked else ''}, {name}",
                f"{1e3 * t:.2f} ms", f"{audio_s / t:.0f}x real time, max |diff| {diff:.1e}")  # fmt: skip
    z = 0.5 * torch.randn(64, cfg.inter_channels, 96, device=DEV, generator=g).half()
    ge = 0.1 * torch.randn(64, cfg.gin_channels, 1, device=DEV, generator=g).half()
    for name, configs in (("channels-last", None), ("fused best", best)):
        if configs is not None:
            last.use_fused_resblocks(configs)
        last(z, ge)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            last(z, ge)
            torch.cuda.synchronize()
        print(f"--- vocoder 64 x 96 {name}, by kernel", flush=True)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14), flush=True)
        last.use_plain_resblocks()
    print_table()


def admit_only() -> None:
    """``python3 bench/gpu_bench.py admit``: a burst of 64 requests as the product's batch
    admits them (Triton step and sampler, prefill deferred to the next step, English-like
    rows: zero BERT features, host tensors): the host time of opening the rows and of the
    first step's parts (packing, prefill launch, rows' state, first replay), the GPU time
    of the whole, and the host's CUDA calls in that step (torch.profiler, self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    import wyoming_sovits.batching as batching_module

    gpt = t2s_model(torch.float16)
    cfg, batch = gpt.config, 64
    sampler = FusedSampler(cfg.vocab_size, cfg.eos, EOS_BLOCKED_STEPS, batch, DEV)
    b = ContinuousBatcher(gpt, batch, PHONES + PROMPT + N_TOK + 64, max_new_tokens=N_TOK + 8,
                          steps_per_sync=4, forward=FusedDecodeStep(gpt, batch), sampler=sampler,
                          defer_prefill=True, run_ahead=False, buckets=(batch,))  # fmt: skip
    b.capture(PHONES + PROMPT + N_TOK + 8)
    spent: dict[str, float] = {}

    def timed(owner: object, name: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        setattr(owner, name, wrapper)

    timed(batching_module, "pack_inputs")
    timed(gpt, "prefill")
    timed(b, "_admit")
    timed(b, "_launch")
    items = [
        T2SInput(i.phone_ids, torch.zeros_like(i.bert), i.prompt_tokens) for i in request(batch)
    ]
    for burst in range(4):
        torch.cuda.synchronize()
        spent.clear()
        t0 = time.perf_counter()
        streams = [b.open(item, SamplingParams(), N_TOK) for item in items]
        t_open = time.perf_counter() - t0
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        t1 = time.perf_counter()
        with (
            profile(activities=[ProfilerActivity.CPU])
            if burst == 3
            else contextlib.nullcontext() as prof
        ):
            b.advance()
        t_step = time.perf_counter() - t1
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        if burst >= 1:
            parts = ", ".join(f"{k} {1e3 * v:.1f}" for k, v in spent.items())
            row(f"admit 64 rows, burst {burst}{' (profiled)' if prof else ''}",
                f"{1e3 * t_step:.1f} ms", f"host: open {1e3 * t_open:.1f} ms; step's {parts} ms; "
                f"GPU {start.elapsed_time(end):.1f} ms")  # fmt: skip
        if prof is not None:
            print(
                prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18), flush=True
            )
        for stream in streams:
            stream.close()
        b.advance()  # the closed rows park
    print_table()


def batch_only() -> None:
    """``python3 bench/gpu_bench.py batch``: the GPT step at 16 and 64 rows, tuned as the
    product tunes it (``pipeline._fused_step``'s candidates, the row-blocked GEMVs among
    them): each kernel's fastest shape, one batch row per program or row-blocked; the
    whole step of each (the tuner's pick); forward only against the torch step (cuBLAS)
    and against the row-blocked GEMV without its one-tile-ahead loads; the batcher (one
    prefill, N_TOK steps, fused sampler); the blocked step's teacher-forced logits at 64
    rows (fp16) against the fp32 torch step."""
    from wyoming_sovits import kernels

    gpt = t2s_model(torch.float16)
    args = {"block_n": (1, 2, 4, 8, 16), "warps": (4,), "splits": (1, 4, 8, 16), "block_s": (64,)}
    slots = PHONES + PROMPT + N_TOK // 2
    for batch in (16, 64):
        gpt.setup_caches(batch, PHONES + PROMPT + N_TOK + 64)
        t0 = time.perf_counter()
        tuned = tune_step(gpt, batch, slots=slots, **args)  # type: ignore[arg-type]
        chosen = ", ".join(f"{n}x{k}: {_label(c)}" for (n, k), c in sorted(tuned.gemv.items()))
        row(f"tuning B={batch}", f"{time.perf_counter() - t0:.0f} s",
            f"{len(tuned.timings)} candidates; {chosen}; {tuned.attention}; pdl {tuned.pdl}")  # fmt: skip
        by_kernel: dict[str, dict[bool, tuple[float, str]]] = {}
        for kernel, label, t in tuned.timings:
            blocked = "batch rows" in label
            best = by_kernel.setdefault(kernel, {}).get(blocked)
            if kernel == "whole step" or best is None or t < best[0]:
                if kernel == "whole step":
                    row(f"tuned B={batch}: whole step, {label}", f"{1e6 * t:.0f} us", "graph")
                    continue
                by_kernel[kernel][blocked] = (t, label)
        for kernel, kinds in by_kernel.items():
            for blocked, (t, label) in sorted(kinds.items()):
                row(f"tuned B={batch}: {kernel}, {'row-blocked' if blocked else 'per-row'}",
                    f"{1e6 * t:.2f} us", label)  # fmt: skip
        gpt.setup_caches(batch, PHONES + PROMPT + N_TOK + 64)
        times = {"torch": forward_time(gpt, batch)}
        times["Triton, tuned"] = forward_time(tuned.step(gpt, batch), batch)
        kernels.GEMM_PREFETCH = False
        times["Triton, tuned, no tile ahead"] = forward_time(tuned.step(gpt, batch), batch)
        kernels.GEMM_PREFETCH = True
        for name, t in times.items():
            row(f"GPT fp16 B={batch} forward only (graph), {name}", f"{1e6 * t:.0f} us/step",
                f"{times['torch'] / t:.2f}x the torch step; {batch / t / 25:,.0f}x real time")  # fmt: skip
        if batch == 64:
            bench_batcher(gpt, batch, False, True)
            bench_batcher(gpt, batch, True, True, tuned.step(gpt, batch), "Triton tuned")
            check_blocked(gpt, tuned)
    print_table()


def gemmk_only() -> None:
    """``python3 bench/gpu_bench.py gemmk``: the row-blocked GEMVs at 64 and 16 rows by K
    per step (``GemvConfig.block_k``; at K, one step: ``ONE_K``), each K step's fastest
    launch shape per GEMV; then the whole step tuned with the product's K steps
    (``kernels.ROW_BLOCK_K``) against K steps of 64 only (as before): each tuning's pick,
    its forward-only step and the batcher (64 rows)."""
    from wyoming_sovits import kernels

    gpt = t2s_model(torch.float16)
    slots = PHONES + PROMPT + N_TOK // 2
    for batch in (64, 16):
        gpt.setup_caches(batch, PHONES + PROMPT + N_TOK + 64)
        step = FusedDecodeStep(gpt, batch)
        for name, (weight, call) in kernels.gemv_calls(gpt, step, batch).items():
            shape = (int(weight.shape[0]), int(weight.shape[1]))
            for bk in sorted({min(bk, shape[1]) for bk in (64, 128, 256, 512, 2048)}):
                tried = []
                for bb in (16, 32) if batch > 16 else (16,):
                    for bn in (16, 32, 64):
                        for w in (4, 8):
                            step.gemv_configs[shape] = config = GemvConfig(bn, w, bb, bk)
                            t = kernels._candidate_time(partial(call, step), DEV)
                            tried.append((t, config))
                t, config = min(tried, key=lambda tc: tc[0])
                refused = sum(math.isinf(t) for t, _ in tried)
                row(f"GEMV B={batch} {name} {shape[0]}x{shape[1]}, K step {bk}",
                    f"{1e6 * t:.2f} us", f"{kernels.gemv_label(config)}; {refused} of "
                    f"{len(tried)} shapes refused")  # fmt: skip
        t = kernels._graph_time(partial(step.x0.add_, 0), DEV)
        row(f"launch floor B={batch} (one elementwise kernel)", f"{1e6 * t:.2f} us", "graph")
        pos = torch.full((batch,), slots, dtype=torch.long, device=DEV)
        cfg = gpt.config
        floor = batch * cfg.n_head * slots * cfg.head_dim * 4 / 4.8e12
        for splits in (1, 2, 4):
            best = (math.inf, "")
            for bs in (32, 64, 128):
                for w in (2, 4, 8):
                    att = FusedDecodeStep(
                        gpt, batch, attention=kernels.AttentionConfig(splits, bs, w)
                    )
                    t = kernels._candidate_time(partial(att._attention, 0, pos, batch), DEV)
                    best = min(best, (t, f"slots/block {bs}, warps {w}"))
            row(f"attention alone B={batch} @{slots} slots, {splits} splits",
                f"{1e6 * best[0]:.2f} us", f"{best[1]}; K+V bytes at 4.8 TB/s {1e6 * floor:.1f} us")  # fmt: skip
    args = {"block_n": (1, 2, 4, 8, 16), "warps": (4, 8), "splits": (1, 4, 8), "block_s": (64,)}
    for batch in (64, 16):
        for ks in ((64,), kernels.ROW_BLOCK_K):
            gpt.setup_caches(batch, PHONES + PROMPT + N_TOK + 64)
            t0 = time.perf_counter()
            tuned = tune_step(gpt, batch, slots=slots, row_block_k=ks, **args)  # type: ignore[arg-type]
            label = f"B={batch}, K steps {'/'.join(map(str, ks))}"
            chosen = ", ".join(f"{n}x{k}: {kernels.gemv_label(c)}"
                               for (n, k), c in sorted(tuned.gemv.items()))  # fmt: skip
            row(f"tuning {label}", f"{time.perf_counter() - t0:.0f} s",
                f"{chosen}; {tuned.attention}; pdl {tuned.pdl}")  # fmt: skip
            gpt.setup_caches(batch, PHONES + PROMPT + N_TOK + 64)
            t = forward_time(tuned.step(gpt, batch), batch)
            row(f"GPT fp16 forward only (graph), {label}", f"{1e6 * t:.0f} us/step",
                f"{batch / t / 25:,.0f}x real time")  # fmt: skip
            if batch == 64:
                bench_batcher(gpt, batch, True, True, tuned.step(gpt, batch), f"K {ks}")
    print_table()


def _label(config: GemvConfig) -> str:
    return f"{config.block_n}" + (f"/{config.block_b}b" if config.block_b > 1 else "")


@torch.no_grad()
def check_blocked(gpt16: Text2Semantic, tuned: TuneResult) -> None:
    """Teacher-forced logits of 64 ragged rows: the tuned (row-blocked) fp16 step vs the
    fp32 torch step, 64 steps; and the fp32 blocked step vs the fp32 torch step."""
    items = []
    for k, i in enumerate(request(64, seed=5)):
        assert i.prompt_tokens is not None
        n, p = 30 + (k * 7) % 60, 60 + (k * 13) % 110
        items.append(T2SInput(i.phone_ids[:n], i.bert[:, :n], i.prompt_tokens[:p]))
    forced = torch.randint(0, 1024, (64, 64), generator=torch.Generator().manual_seed(6))
    m32 = t2s_model(torch.float32)
    packed = pack_inputs(items, m32.config)
    want = T2SGraphRunner(m32, 64, 512, max_new_tokens=80).teacher_forced_logits(packed, forced)
    for model, label in ((gpt16, "fp16"), (m32, "fp32")):
        runner = T2SGraphRunner(model, 64, 512, max_new_tokens=80, forward=tuned.step(model, 64))
        got = runner.teacher_forced_logits(packed, forced)
        worst = max(rel(got[b, t], want[b, t]) for b in range(64) for t in range(64))
        row(f"GPT row-blocked B=64 {label} vs fp32 torch step", f"{worst:.2e}",
            "max rel err over 64 ragged rows x 64 teacher-forced steps")  # fmt: skip


def decode_only() -> None:
    """``python3 bench/gpu_bench.py decode``: the B=1 Triton step rows only (a short run)."""
    gpt = t2s_model(torch.float16)
    tuned = guarded("tuning B=1", bench_tune, gpt, 1)
    guarded("fused step B=1", bench_fused, gpt, 1, tuned)
    guarded("decode tuned", bench_decode, gpt, True, tuned, "Triton tuned, plain launches",
            False)  # fmt: skip
    guarded("decode tuned PDL", bench_decode, gpt, True, tuned, "Triton tuned + PDL", True)
    guarded("fused PDL check", check_pdl, gpt, tuned)
    guarded("sampler", bench_sampler, gpt)
    guarded("prefill graphs", bench_prefill_graphs, gpt)
    guarded("profile product step", profile_product_step, gpt, tuned)
    print_table()


def rtf_only() -> None:
    """``python3 bench/gpu_bench.py rtf``: the product path of a 10 s utterance in one
    process (prefill and 250 tokens in the batcher, Triton tuned + PDL; the SoVITS graph
    plain, then compiled), about 4 minutes with the compiling."""
    gpt = t2s_model(torch.float16)
    tuned = guarded("tuning B=1", bench_tune, gpt, 1)
    per_token, prefill = bench_decode(gpt, True, tuned, "Triton tuned + PDL", True)
    sovits = sovits_model(torch.float16)
    with torch.no_grad():
        spec = torch.rand(1, 1025, 200, device=DEV, dtype=torch.float16)
        ge = sovits.encode_reference(spec, torch.randn(1, 20480, device=DEV, dtype=torch.float16))
    codes = torch.randint(0, 1024, (N_TOK,), device=DEV)
    text = torch.randint(0, 732, (120,), device=DEV)
    for name, compiled in (("plain", False), ("compiled", True)):
        graphs = SoVITSGraphs(sovits, compile=compiled)
        t0 = time.perf_counter()
        graphs.decode(codes, text, ge)
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        t_s2 = cuda_time(partial(graphs.decode, codes, text, ge), reps=10)
        total = prefill + N_TOK * per_token + t_s2
        row(f"RTF 10 s utterance fp16, product path, SoVITS graph {name}", f"{total / 10:.4f}",
            f"{1e3 * total:.1f} ms: prefill {1e3 * prefill:.1f} + {N_TOK} x "
            f"{1e6 * per_token:.0f} us + SoVITS {1e3 * t_s2:.2f} ms (first call {first:.0f} s)")  # fmt: skip
    print_table()


def main() -> None:
    short_runs = {
        "rtf": rtf_only,
        "sovits": sovits_only,
        "decode": decode_only,
        "windows": windows_only,
        "prefill": prefill_only,
        "batch": batch_only,
        "gemmk": gemmk_only,
        "vocoder": vocoder_only,
        "vconv": vconv_only,
        "admit": admit_only,
    }
    if len(sys.argv) == 2 and sys.argv[1] in short_runs:
        short_runs[sys.argv[1]]()
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    t0 = time.time()
    check_gpt()
    torch.cuda.empty_cache()
    # memory: one fp16 model set (s1 + s2 v2ProPlus + sv), cache for B=1, graphs captured
    torch.cuda.reset_peak_memory_stats()
    gpt = t2s_model(torch.float16)
    sovits = sovits_model(torch.float16)
    sv_state = filled_state_dict("sv_eres2netv2w24s4")
    sv = SpeakerEncoder(SVConfig.infer(sv_state))
    sv.load_state_dict(sv_state, strict=True)
    sv = sv.eval().to(DEV, torch.float16)
    loaded = torch.cuda.memory_allocated()
    with torch.no_grad():
        spec = torch.rand(1, 1025, 200, device=DEV, dtype=torch.float16)
        ge = sovits.encode_reference(spec, torch.randn(1, 20480, device=DEV, dtype=torch.float16))
    gpt_e, gpt_g = bench_gpt(gpt, "fp16", 1, 100)
    tuned = guarded("tuning B=1", bench_tune, gpt, 1)
    gpt_f = guarded("fused step B=1", bench_fused, gpt, 1, tuned)
    guarded("decode torch", bench_decode, gpt, False, None, "graphs, torch step + sampling")
    guarded("decode fused", bench_decode, gpt, True, None, "Triton step + sampler, default shapes")
    guarded("decode tuned", bench_decode, gpt, True, tuned, "Triton tuned, plain launches",
            False)  # fmt: skip
    product = guarded(
        "decode tuned PDL", bench_decode, gpt, True, tuned, "Triton tuned + PDL", True
    )
    guarded("fused PDL check", check_pdl, gpt, tuned)
    guarded("prefill shapes", bench_prefill_shapes, gpt)
    guarded("prefill graphs", bench_prefill_graphs, gpt)
    guarded("profile product step", profile_product_step, gpt, tuned)
    t_sov = bench_sovits(sovits, ge, "fp16")
    peak = torch.cuda.max_memory_allocated()  # before the 64-stream SoVITS batches
    row("Peak GPU memory fp16 model set", f"{peak / 2**30:.2f} GiB",
        f"weights {loaded / 2**30:.2f} GiB; + B=1 cache, graphs, SoVITS 10 s")  # fmt: skip
    guarded("SoVITS variants", bench_sovits_variants, ge)
    guarded("SoVITS batched", bench_sovits_batch, sovits, ge)
    guarded("SoVITS windows", bench_sovits_windows, sovits, ge)
    for name, t_gpt, t_s2 in (
        ("eager", gpt_e, t_sov[250][0]),
        ("graphs", gpt_g, t_sov[250][1]),
        ("fused+graphs", gpt_f, t_sov[250][1]),
    ):
        if t_gpt is None:
            continue
        total = t_gpt + t_s2
        row(f"RTF 10 s utterance fp16 {name}", f"{total / 10:.4f}", f"{1e3 * total:.0f} ms")
    if product is not None:  # the server's path: prefill, then the batch's decode loop
        per_token, prefill = product
        total = prefill + N_TOK * per_token + t_sov[250][1]
        row("RTF 10 s utterance fp16, product path", f"{total / 10:.4f}",
            f"{1e3 * total:.0f} ms: prefill + {N_TOK} tokens in the batcher (Triton tuned "
            "+ PDL) + SoVITS graph")  # fmt: skip
    row("Kernels per GPT step fp16 B=1", f"{kernels_per_step(gpt, 1)}", "incl sampling")

    def fused_kernels() -> None:
        fused_step = FusedDecodeStep(gpt, 1)
        row("Kernels per fused GPT step fp16 B=1", f"{kernels_per_step(gpt, 1, fused_step)}",
            "incl sampling")  # fmt: skip

    guarded("fused kernel count", fused_kernels)
    gpt32 = t2s_model(torch.float32)
    bench_gpt(gpt32, "fp32", 1, 50)
    del gpt32
    bench_gpt(gpt, "fp16", 64, 30)
    tuned4 = guarded("tuning B=4", bench_tune, gpt, 4)
    for batch in (4, 16, 64):
        guarded(f"fused step B={batch}", bench_fused, gpt, batch, tuned4 if batch == 4 else None)
    for batch in (8, 64):
        guarded(f"batcher {batch} torch", bench_batcher, gpt, batch, False)
        guarded(f"batcher {batch} triton", bench_batcher, gpt, batch, True)
    guarded("batcher 64 torch, one prefill", bench_batcher, gpt, 64, False, True)
    inputs = request(1)
    for backend in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
        runner = T2SGraphRunner(
            gpt, 1, PHONES + PROMPT + N_TOK + 8, max_new_tokens=N_TOK, attention=[backend]
        )
        t_b = cuda_time(partial(graph_decode, runner, inputs, N_TOK))
        row(f"GPT fp16 B=1 graph, SDPA {backend.name}", f"{N_TOK / t_b:,.0f} tok/s",
            f"{1e6 * t_b / N_TOK:.0f} us/step")  # fmt: skip
    print_table()
    if os.environ.get("BENCH_COMPILE") == "1":
        compiled = torch.compile(gpt.forward, dynamic=False, fullgraph=True)
        inputs = request(1)
        runner = T2SGraphRunner(
            gpt, 1, PHONES + PROMPT + N_TOK + 8, max_new_tokens=N_TOK, forward=compiled
        )
        tc = time.time()
        runner.capture(1, PHONES + PROMPT, N_TOK)
        t_c = cuda_time(lambda: graph_decode(runner, inputs, N_TOK))
        row("GPT fp16 B=1 compiled+graph", f"{N_TOK / t_c:,.0f} tok/s",
            f"{1e6 * t_c / N_TOK:.0f} us/step; compile {time.time() - tc:.0f} s")  # fmt: skip
    print(f"\ntotal {time.time() - t0:.0f} s")
    print_table()


def print_table() -> None:
    print(f"\n| {'measure':<44} | {'value':>14} | note |\n|---|---:|---|")
    for m, v, n in ROWS:
        print(f"| {m:<44} | {v:>14} | {n} |", flush=True)
    out = os.environ.get("BENCH_OUT") or os.environ.get("OUT")
    if out:
        Path(out, "bench.json").write_text(json.dumps({"rows": ROWS, **LOG}, indent=1))


if __name__ == "__main__":
    main()
