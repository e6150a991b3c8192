"""Fast paths: the graph runner's step logic on CPU (eager), its CUDA graphs behind ``gpu``."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from contract import CONTRACT_DIR, filled_state_dict, fold_weight_norm, manifest
from test_t2s import request, tiny_model

from wyoming_sovits.fast import WINDOW_BUCKETS, FastPathError, SoVITSGraphs, T2SGraphRunner
from wyoming_sovits.generate import SamplingParams, generate_batch
from wyoming_sovits.models.t2s import T2SConfig, T2SInput, Text2Semantic, pack_inputs
from wyoming_sovits.models.vits import SoVITS, VitsConfig, is_training_only

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def golden_case(device: str = "cpu") -> tuple[Text2Semantic, T2SInput, np.lib.npyio.NpzFile]:
    golden = np.load(CONTRACT_DIR / "golden_s1_v2.npz")
    model = Text2Semantic(T2SConfig.v2()).eval()
    weights = {k.removeprefix("model."): v for k, v in filled_state_dict("s1_v2").items()}
    model.load_state_dict(weights, strict=True)
    prompt = torch.from_numpy(golden["prompts"])[0]
    item = T2SInput(torch.from_numpy(golden["x"])[0], torch.from_numpy(golden["bert"])[0], prompt)
    return model.to(device), item, golden


def test_runner_step_reproduces_golden_greedy_tokens_and_logits() -> None:
    """The captured step's logic (EOS-bar tensor, sampler, token log), run eagerly."""
    model, item, golden = golden_case()
    runner = T2SGraphRunner(model, 1, 256, max_new_tokens=128, kv_bucket=64, use_graphs=False)
    (tokens,) = runner.generate_batch([item], SamplingParams(top_k=1), max_new_tokens=81)
    assert tokens.tolist() == golden["tokens"][0][30:].tolist()
    forced = torch.from_numpy(golden["tokens"][0][30:50])[None]  # (1, 20)
    logits = runner.teacher_forced_logits(pack_inputs([item], model.config), forced)
    want = torch.from_numpy(golden["step_logits"][:20])
    rel = (logits[0] - want).norm(dim=1) / want.norm(dim=1)
    assert rel.max().item() < 1e-4


@pytest.mark.parametrize("steps_per_sync", [1, 3, 8])
def test_runner_matches_eager_sampling_with_stops_and_overrun(steps_per_sync: int) -> None:
    """Seeded sampling, two rows of different prompt lengths, a cap that is not a multiple
    of steps_per_sync: same tokens and lengths as ``generate.generate_batch``."""
    model = tiny_model(3)
    inputs = [request(5, 3, 0), request(3, 0, 1)]
    params = [SamplingParams(top_k=5, temperature=1.3), SamplingParams(top_k=3, top_p=0.8)]
    torch.manual_seed(7)
    want = generate_batch(model, inputs, params, max_new_tokens=13)
    runner = T2SGraphRunner(
        model, 2, 64, max_new_tokens=32, steps_per_sync=steps_per_sync, kv_bucket=8,
        use_graphs=False,
    )  # fmt: skip
    torch.manual_seed(7)
    got = runner.generate_batch(inputs, params, max_new_tokens=13)
    assert [t.tolist() for t in got] == [t.tolist() for t in want]


def test_kv_len_prefix_equals_full_cache() -> None:
    model = tiny_model(1)
    packed = pack_inputs([request(4, 2, 0)], model.config)
    model.setup_caches(1, 64)
    with torch.no_grad():
        model.prefill(packed)
        pos = torch.tensor([packed.length])
        full = model(torch.tensor([5]), pos)
        prefix = model(torch.tensor([5]), pos, kv_len=packed.length + 1)
    torch.testing.assert_close(prefix, full, rtol=1e-5, atol=1e-6)


def test_runner_rejects_what_it_cannot_serve() -> None:
    model = tiny_model(0)
    if not HAS_CUDA:
        with pytest.raises(FastPathError, match="CUDA"):
            T2SGraphRunner(model, 1, 64)
    runner = T2SGraphRunner(model, 1, 16, max_new_tokens=8, use_graphs=False)
    with pytest.raises(FastPathError, match="slots"):
        runner.generate_batch([request(6, 3, 0)], max_new_tokens=8)
    with pytest.raises(FastPathError, match="rows"):
        runner.generate_batch([request(2, 0, 0)] * 2, max_new_tokens=2)


def sovits_v2proplus(device: str) -> SoVITS:
    cfg = VitsConfig.from_hparams(manifest("s2_v2ProPlus")["config"], "v2ProPlus")
    model = SoVITS(cfg).eval()
    sd = fold_weight_norm(filled_state_dict("s2_v2ProPlus"))
    model.load_state_dict({k: v for k, v in sd.items() if not is_training_only(k)}, strict=True)
    return model.to(device)


@pytest.mark.gpu
def test_graph_runner_golden_greedy_on_gpu() -> None:
    model, item, golden = golden_case("cuda")
    runner = T2SGraphRunner(model, 1, 256, max_new_tokens=128)
    (tokens,) = runner.generate_batch([item], SamplingParams(top_k=1), max_new_tokens=81)
    assert tokens.tolist() == golden["tokens"][0][30:].tolist()


@pytest.mark.gpu
def test_prefill_graphs_replay_the_eager_prefill_on_gpu() -> None:
    """Full-size weights: a replayed prefill (two prompts of one bucket, then a replaced
    cache) gives the eager padded prefill's logits, keys and row start; the golden
    greedy tokens decode after it through the one-row batch."""
    from wyoming_sovits.batching import ContinuousBatcher, drain
    from wyoming_sovits.fast import PrefillGraphs

    model, item, golden = golden_case("cuda")
    eager = PrefillGraphs(model, 64, use_graphs=False)
    graphs = PrefillGraphs(model, 64)
    for cache_slots in (512, 640):  # the second cache drops the first cache's graphs
        model.setup_caches(1, cache_slots)
        for seed in (0, 1):
            g = torch.Generator().manual_seed(seed)
            other = T2SInput(torch.randint(0, 300, (item.phone_ids.shape[0],), generator=g),
                             torch.randn(item.bert.shape, generator=g), item.prompt_tokens)  # fmt: skip
            packed = pack_inputs([other], model.config).to("cuda")
            want, slots = eager(packed)
            want_keys = model.k_cache[:, 0, :, :slots].clone()
            got, got_slots = graphs(packed)
            assert got_slots == slots and graphs.failed is None
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(
                model.k_cache[:, 0, :, :slots], want_keys, rtol=1e-4, atol=1e-4
            )
        assert len(graphs.captured) == 1
    batch = ContinuousBatcher(model, 1, 512, max_new_tokens=128)
    assert batch._prefills is not None and batch._prefills.use_graphs
    stream = batch.open(item, SamplingParams(top_k=1), 81)
    tokens = [t for chunk in drain(stream) for t in chunk.tolist()]
    assert batch._prefills.captured and batch._prefills.failed is None
    assert tokens == golden["tokens"][0][30:].tolist()


def _gpu_rows(
    model: SoVITS, sizes: list[tuple[int, int]]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """Decode rows of (tokens, phones) on the GPU: random codes, phones and noise, each
    row its own ge."""
    ge = torch.randn(1, model.cfg.gin_channels, 1, device="cuda")
    return [
        (
            torch.randint(0, 1024, (n,), device="cuda"),
            torch.randint(0, 732, (p,), device="cuda"),
            ge * (1 + k % 4),
            torch.randn(1, model.cfg.inter_channels, 2 * n, device="cuda"),
            0.5,
        )
        for k, (n, p) in enumerate(sizes)
    ]


@pytest.mark.gpu
def test_sovits_graphs_decode_rows_as_each_alone_on_gpu() -> None:
    """Three sentences of different lengths in one replay: each row's audio is its own
    single-sentence replay (the vocoder masks make padding invisible)."""
    model = sovits_v2proplus("cuda")
    graphs = SoVITSGraphs(model, noise_scale=0.0)
    rows = _gpu_rows(model, [(40, 30), (13, 9), (25, 20)])
    got = graphs.decode_rows(rows)
    assert graphs.captured_batches == [(4, 50, 32)]
    for (codes, text, g, noise, scale), audio in zip(rows, got, strict=True):
        alone = graphs.decode(codes, text, g, noise, scale)
        assert audio.shape == alone.shape == (len(codes) * 1280,)
        assert float((audio - alone).norm() / alone.norm()) < 1e-3
    assert not graphs.fits(500, 30, rows=64)  # 64 x 500 padded tokens: eager instead


@pytest.mark.gpu
def test_sovits_graphs_decode_windows_as_the_whole_decode_on_gpu() -> None:
    """Streamed decodes of four rows, each from its own start frame: the windowed graphs
    (latents, then the vocoder over the windows) give the whole decode's samples from
    there, and a 64-row batch of 1 s windows replays them too."""
    model = sovits_v2proplus("cuda")
    graphs = SoVITSGraphs(model, noise_scale=0.0)
    specs = [(72, 30, 64), (36, 9, 16), (40, 20, 0), (144, 40, 136)]
    rows = _gpu_rows(model, [(n, p) for n, p, _ in specs])
    starts = [s for _, _, s in specs]
    got = graphs.decode_windows(rows, starts)
    assert graphs.windows_failed is None and graphs.captured_windows == [(4, 176, True)]
    for audio, whole, start in zip(got, graphs.decode_rows(rows), starts, strict=True):
        want = whole[start * 1280 // 2 :]
        assert audio.shape == want.shape
        assert float((audio - want).norm() / want.norm()) < 1e-3
    wide = _gpu_rows(model, [(50, 40)] * 64)  # windows of 36 frames fill the 48 bucket
    got = graphs.decode_windows(wide, [76] * 64)
    assert [len(a) for a in got] == [24 * 640] * 64
    assert graphs.captured_windows == [(4, 176, True), (64, 48, False)]
    for audio, whole in zip(got[:4], graphs.decode_rows(wide)[:4], strict=True):
        want = whole[76 * 640 :]
        assert float((audio - want).norm() / want.norm()) < 1e-3


@pytest.mark.gpu
def test_channels_last_vocoder_in_half_precision_on_gpu() -> None:
    """The product's vocoder layout on CUDA (fp16, channels-last 2-D convolutions) against
    the 1-D one of the same weights: 64 first-chunk windows, rows masked by their lengths."""
    import copy

    model = sovits_v2proplus("cuda").half()
    one_d = model.dec
    two_d = copy.deepcopy(one_d)
    two_d.use_channels_last()
    assert two_d._twin and not one_d._twin
    gen = torch.Generator(device="cuda").manual_seed(0)
    z = 0.5 * torch.randn(64, model.cfg.inter_channels, 24, device="cuda", generator=gen)
    g = 0.1 * torch.randn(64, model.cfg.gin_channels, 1, device="cuda", generator=gen)
    lengths = torch.full((64,), 24, device="cuda")
    lengths[32:] = 16
    with torch.no_grad():
        want = one_d(z.half(), g.half(), lengths).float()
        got = two_d(z.half(), g.half(), lengths).float()
    assert got.shape == want.shape == (64, 1, 24 * 640)
    assert float((got - want).norm() / want.norm()) < 1e-2


@pytest.mark.gpu
def test_fused_vocoder_in_half_precision_on_gpu() -> None:
    """The product's vocoder on CUDA with Triton (``use_fused_resblocks``, default launch
    shapes) against cuDNN's channels-last one, fp16, full-size v2ProPlus: 64 rows masked by
    their lengths, and one row (which the fused twin serves too)."""
    import copy

    model = sovits_v2proplus("cuda").half()
    plain = model.dec
    plain.use_channels_last(min_rows=1)
    fused = copy.deepcopy(plain)
    fused.use_channels_last(min_rows=1)
    fused.use_fused_resblocks()
    assert fused.fused_resblocks and not plain.fused_resblocks
    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows, frames in ((64, 24), (1, 100)):
        z = 0.5 * torch.randn(rows, model.cfg.inter_channels, frames, device="cuda", generator=gen)
        g = 0.1 * torch.randn(rows, model.cfg.gin_channels, 1, device="cuda", generator=gen)
        lengths = torch.full((rows,), frames, device="cuda")
        lengths[rows // 2 :] = frames * 2 // 3
        with torch.no_grad():
            want = plain(z.half(), g.half(), lengths).float()
            got = fused(z.half(), g.half(), lengths).float()
        assert got.shape == want.shape == (rows, 1, frames * 640)
        assert float((got - want).norm() / want.norm()) < 1e-2


@pytest.mark.gpu
def test_a_failed_capture_leaves_random_draws_working_on_gpu() -> None:
    """A capture that raises (a host sync inside it) is reported as it was, and then
    random draws, a graph that draws captured before and a new capture still work."""
    from wyoming_sovits.fast import capturing

    dev = torch.device("cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    x = torch.zeros(4, device=dev)
    drawing = torch.cuda.CUDAGraph()
    with capturing(drawing, dev, side):
        x.add_(torch.rand(4, device=dev))
    with pytest.raises(RuntimeError), capturing(torch.cuda.CUDAGraph(), dev, side):
        assert (x + 1).sum().item() > 0  # a sync: the capture fails
    torch.cuda.synchronize()
    assert torch.randn(8, device=dev).isfinite().all()
    drawing.replay()
    again = torch.cuda.CUDAGraph()
    with capturing(again, dev, side):
        x.add_(torch.rand(4, device=dev))
    again.replay()
    torch.cuda.synchronize()
    assert float(x.min()) > 0


@pytest.mark.gpu
def test_sovits_graphs_match_eager_on_gpu() -> None:
    model = sovits_v2proplus("cuda")
    graphs = SoVITSGraphs(model, noise_scale=0.0)
    codes = torch.randint(0, 1024, (40,), device="cuda")
    text = torch.randint(0, 732, (30,), device="cuda")
    ge = torch.randn(1, model.cfg.gin_channels, 1, device="cuda")
    with torch.no_grad():
        want = model.decode(codes[None, None], text[None], ge, noise_scale=0.0)[0, 0]
    got = graphs.decode(codes, text, ge)
    assert got.shape == want.shape
    assert float((got - want).norm() / want.norm()) < 1e-3


def _buckets_only() -> SoVITSGraphs:
    """The bucket arithmetic of ``SoVITSGraphs`` without a GPU (no graph is captured)."""
    graphs = object.__new__(SoVITSGraphs)
    graphs.token_buckets = [16, 25, 50, 100, 150, 200, 250, 300, 400, 500]
    graphs.phone_buckets = [32, 64, 128, 256, 512]
    graphs.row_buckets = [1, 2, 4, 8, 16, 32, 64]
    graphs.window_buckets = list(WINDOW_BUCKETS)
    graphs.max_cells, graphs.max_latent_cells = 4096, 16384
    graphs.windows_failed = None
    graphs.model = SimpleNamespace(cfg=VitsConfig())  # type: ignore[assignment]
    return graphs


def test_batched_graph_buckets_and_their_warm_up() -> None:
    """Several sentences share a bucket up to 4096 padded tokens (windowed ones more);
    warm-up with several streams captures the first three streamed decodes (12, 36, 72
    tokens; the last two windowed) for 2 rows up to the stream count, where they fit."""
    from wyoming_sovits.pipeline import batch_warm_up_buckets

    graphs = _buckets_only()
    assert graphs.fits(100, 60, rows=32) and not graphs.fits(100, 60, rows=33)  # 64 x 100
    assert graphs.fits(500, 30) and not graphs.fits(501, 30) and not graphs.fits(10, 600)
    keys = {graphs._key(t, p, r) for t, p, r in batch_warm_up_buckets(graphs, 3)}
    assert keys == {(r, t, p) for r in (2, 4) for t in (16, 50, 100) for p in (32, 64)}
    wide = {graphs._key(t, p, r) for t, p, r in batch_warm_up_buckets(graphs, 64)}
    assert (64, 50, 64) in wide and (64, 100, 32) in wide  # windowed: 64 x 96 frames
    assert batch_warm_up_buckets(graphs, 1) == []
    graphs.windows_failed = "off"  # then only whole decodes: 64 x 100 does not fit
    wide = {graphs._key(t, p, r) for t, p, r in batch_warm_up_buckets(graphs, 64)}
    assert (64, 50, 64) in wide and (64, 100, 32) not in wide and (32, 100, 64) in wide


def test_graph_inputs_filled_per_row_with_spare_rows_silent() -> None:
    """What a batched replay reads: each row's codes, phones, lengths, ge, noise and
    scale, zero padding after them, and one silent token in the bucket's spare rows."""
    from wyoming_sovits.fast import _fill_decode_inputs

    io = {
        "codes": torch.full((1, 4, 16), 7, dtype=torch.long),  # stale values of a replay
        "text": torch.full((4, 32), 7, dtype=torch.long),
        "code_len": torch.full((4,), 9, dtype=torch.long),
        "text_len": torch.full((4,), 9, dtype=torch.long),
        "ge": torch.ones(4, 3, 1, dtype=torch.float16),
        "noise": torch.ones(4, 2, 32, dtype=torch.float16),
        "scale": torch.ones(4, 1, 1, dtype=torch.float16),
    }
    noise = torch.randn(1, 2, 10)
    rows = [
        (torch.arange(1, 6), torch.arange(1, 4), torch.full((1, 3, 1), 2.0), noise, 0.5),
        (torch.arange(1, 13), torch.arange(1, 21), torch.full((1, 3, 1), 3.0), None, 0.0),
    ]
    torch.manual_seed(0)
    _fill_decode_inputs(io, rows, frames_per_token=2)
    assert io["codes"][0, 0].tolist() == [*range(1, 6), *[0] * 11]
    assert (
        io["codes"][0, 1, :12].tolist() == list(range(1, 13))
        and int(io["codes"][0, 2:].abs().sum()) == 0
    )
    assert io["text"][1, :20].tolist() == list(range(1, 21)) and int(io["text"][1, 20:].sum()) == 0
    assert io["code_len"].tolist() == [5, 12, 1, 1] and io["text_len"].tolist() == [3, 20, 1, 1]
    assert io["ge"][:, 0, 0].tolist() == [2.0, 3.0, 0.0, 0.0]
    assert io["scale"].flatten().tolist() == [0.5, 0.0, 0.0, 0.0]
    torch.testing.assert_close(io["noise"][0, :, :10], noise[0].half())
    assert int(io["noise"][0, :, 10:].abs().sum()) == 0
    assert (
        float(io["noise"][1, :, :24].std()) > 0.5 and int(io["noise"][1, :, 24:].abs().sum()) == 0
    )
    assert int(io["noise"][2:].abs().sum()) == 0


def test_a_failed_compilation_falls_back_to_the_plain_decode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``SoVITSGraphs(compile=True)``: the warm-up before a bucket's capture compiles once
    for one row and once for several (logged), and a compilation that fails is logged and
    the plain decode is warmed up and captured instead, from then on."""
    graphs = _buckets_only()
    calls: list[str] = []

    def compiled(*args: object) -> None:
        calls.append("compiled")

    graphs._compiled, graphs._compiled_kinds, graphs.compile_failed = compiled, set(), None

    def run() -> None:
        (graphs._compiled or (lambda: calls.append("plain")))()

    with caplog.at_level("INFO", logger="wyoming_sovits.fast"):
        for rows in (1, 1, 4, 2):
            graphs._warm_up(run, rows)
    assert calls == ["compiled"] * 4
    assert sum("Compiling the SoVITS decode" in r.message for r in caplog.records) == 2

    def broken(*args: object) -> None:
        raise RuntimeError("no compiler here")

    graphs._compiled, graphs._compiled_kinds, calls[:] = broken, set(), []
    graphs._warm_up(run, 1)
    assert calls == ["plain"] and graphs._compiled is None
    assert graphs.compile_failed == "RuntimeError: no compiler here"
    graphs._warm_up(run, 4)
    assert calls == ["plain", "plain"]


def test_no_garbage_collection_inside_a_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector is off while a capture runs (graphs it frees mid-capture break the
    capture) and on again after it, whether the capture ends or raises."""
    import contextlib
    import gc

    from wyoming_sovits import fast

    seen: list[bool] = []

    @contextlib.contextmanager
    def fake_graph(graph: object, pool: object = None, stream: object = None) -> Iterator[None]:
        seen.append(gc.isenabled())
        yield
        seen.append(gc.isenabled())

    monkeypatch.setattr(torch.cuda, "graph", fake_graph)
    assert gc.isenabled()
    with fast.capturing(object(), torch.device("cpu")):  # type: ignore[arg-type]
        seen.append(gc.isenabled())
    assert seen == [False, False, False] and gc.isenabled()
    failing = fast.capturing(object(), torch.device("cpu"))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="kernel"), failing:
        assert not gc.isenabled()
        raise RuntimeError("a kernel failed")
    assert gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    try:
        with fast.capturing(object(), torch.device("cpu")):  # type: ignore[arg-type]
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
