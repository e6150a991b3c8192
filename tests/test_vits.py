"""SoVITS decoder: golden vectors of the contract, official state-dict layout, tiny-model batching."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from contract import CONTRACT_DIR, filled_state_dict, fold_weight_norm, manifest

from wyoming_sovits.models.vits import (
    SoVITS,
    VitsConfig,
    VitsConfigError,
    VitsInputError,
    is_training_only,
)
from wyoming_sovits.models.vits_modules import Generator

ALL_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
# Measured ~1.4e-6 on CPU float32; the contract allows 1e-4.
GOLDEN_TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the CI/dev boxes are shared and oversubscription costs 5-10x here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inference_state_dict(family: str) -> dict[str, torch.Tensor]:
    sd = fold_weight_norm(filled_state_dict(family))
    return {k: v for k, v in sd.items() if not is_training_only(k)}


def _expected_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Manifest names/shapes after the documented mapping (weight norm folded, VQ EMA dropped)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, (shape, _) in manifest(family)["state_dict"].items():
        if is_training_only(name) or name.endswith(".weight_g"):
            continue
        out[name.removesuffix("_v") if name.endswith(".weight_v") else name] = tuple(shape)
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v2", "v2ProPlus"])
def test_golden_decode_and_latent(version: str) -> None:
    cfg = VitsConfig.from_hparams(manifest(f"s2_{version}")["config"], version)
    model = SoVITS(cfg).eval()
    model.load_state_dict(_inference_state_dict(f"s2_{version}"), strict=True)
    golden = {
        k: torch.from_numpy(v)
        for k, v in np.load(CONTRACT_DIR / f"golden_s2_{version}.npz").items()
    }
    with torch.no_grad():
        ge = model.encode_reference(golden["refer"], golden["sv_emb"] if cfg.is_pro else None)
        audio = model.decode(golden["codes"], golden["text"], ge, noise_scale=0.0)
        fast = model.decode(golden["codes"], golden["text"], ge, noise_scale=0.0, speed=1.25)
        codes = model.extract_latent(golden["ssl"])
    assert audio.shape == golden["audio"].shape
    assert _rel(audio, golden["audio"]) < GOLDEN_TOL
    assert fast.shape == golden["audio_speed_1_25"].shape
    assert _rel(fast, golden["audio_speed_1_25"]) < GOLDEN_TOL
    assert torch.equal(codes, golden["latent_codes"])


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_state_dict_matches_manifest(version: str) -> None:
    family = f"s2_{version}"
    cfg = VitsConfig.from_hparams(manifest(family)["config"], version)
    assert cfg == VitsConfig.preset(version)
    with torch.device("meta"):
        model = SoVITS(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _expected_shapes(family)
    # Strict loading of the official layout (zeros: only names and shapes matter here).
    official = {
        name: torch.zeros(shape)
        for name, (shape, _) in manifest(family)["state_dict"].items()
        if not name.startswith("enc_q.")
    }
    official = {k: v for k, v in official.items() if not is_training_only(k)}
    for name in [n for n in official if n.endswith(".weight_g")]:
        official[name] = torch.ones_like(official[name])
    model.load_state_dict(fold_weight_norm(official), strict=True, assign=True)


def test_from_hparams_falls_back_to_preset_and_reads_overrides() -> None:
    assert VitsConfig.from_hparams({"model": {}, "data": {}}, "v2ProPlus") == VitsConfig.v2proplus()
    assert VitsConfig.from_hparams({}, "v1").n_symbols == 322
    cfg = VitsConfig.from_hparams(
        {"model": {"gin_channels": 1024, "semantic_frame_rate": "50hz"}}, "v2Pro"
    )
    assert cfg.gin_channels == 1024 and cfg.semantic_frame_rate == "25hz"
    with pytest.raises(VitsConfigError, match="v2ProPlus"):
        VitsConfig.from_hparams({}, "v3")
    with pytest.raises(VitsConfigError, match="resblock"):
        VitsConfig.from_hparams({"model": {"resblock": "2"}}, "v2")


def _tiny(version: str = "v2") -> SoVITS:
    width = 16
    cfg = VitsConfig(
        version=version,
        inter_channels=8,
        hidden_channels=width,
        filter_channels=32,
        n_layers=2,
        resblock_kernel_sizes=(3, 5),
        resblock_dilation_sizes=((1, 3), (1, 3)),
        upsample_rates=(10, 8, 8),
        upsample_initial_channel=32,
        upsample_kernel_sizes=(20, 16, 16),
        gin_channels=2 * width if version in ("v2Pro", "v2ProPlus") else width,
        mrte_channels=width,
        mrte_heads=2,
        style_hidden=8,
        ssl_dim=32,
        codebook_size=64,
        sv_dim=24,
        flow_n_layers=2,
        n_flows=2,
    )
    model = SoVITS(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
    return model


def _inputs(batch: int, tokens: int, phones: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 64, (1, batch, tokens), generator=gen)
    text = torch.randint(0, 732, (batch, phones), generator=gen)
    spec = torch.rand(batch, 1025, 30, generator=gen)
    return codes, text, spec


def test_tiny_batch_decode_lengths_and_consistency() -> None:
    model = _tiny()
    codes, text, spec = _inputs(batch=2, tokens=7, phones=5)
    with torch.no_grad():
        ge = model.encode_reference(spec)
        audio = model.decode(codes, text, ge, noise_scale=0.0)
        fast = model.decode(codes, text, ge, noise_scale=0.0, speed=1.25)
        alone = model.decode(codes[:, 1:], text[1:], ge[1:], noise_scale=0.0)
        noisy = model.decode(codes, text, ge, generator=torch.Generator().manual_seed(3))
        again = model.decode(codes, text, ge, generator=torch.Generator().manual_seed(3))
    assert ge.shape == (2, 16, 1)
    assert audio.shape == (2, 1, 7 * 1280)
    assert fast.shape == (2, 1, (int(14 / 1.25) + 1) * 640)
    assert audio.abs().max() <= 1.0 and audio.abs().max() > 0
    # Random tiny weights give a high-gain vocoder, so compare energies, not samples.
    assert _rel(alone[0], audio[1]) < 1e-4
    torch.testing.assert_close(noisy, again)
    assert not torch.allclose(noisy, audio)


def test_tiny_padded_batch_matches_single_items_before_the_vocoder() -> None:
    model = _tiny()
    codes, text, spec = _inputs(batch=2, tokens=9, phones=6)
    code_lengths, text_lengths = torch.tensor([9, 6]), torch.tensor([6, 4])
    with torch.no_grad():
        ge = model.encode_reference(spec)
        m, logs, mask = model.encode_text_semantic(codes, text, ge, 1.0, code_lengths, text_lengths)
        z = model.flow_reverse(m, mask, ge)
        short_m, short_logs, _ = model.encode_text_semantic(codes[:, 1:, :6], text[1:, :4], ge[1:])
        short_z = model.flow_reverse(short_m, torch.ones_like(short_m[:, :1]), ge[1:])
        audio = model.decode(codes, text, ge, 0.0, 1.0, None, code_lengths, text_lengths)
        fast_m, _, fast_mask = model.encode_text_semantic(
            codes, text, ge, 1.5, code_lengths, text_lengths
        )
    torch.testing.assert_close(m[1:, :, :12], short_m, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logs[1:, :, :12], short_logs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z[1:, :, :12], short_z, rtol=1e-5, atol=1e-5)
    assert mask[:, 0].sum(-1).tolist() == [18, 12]
    assert audio.shape == (2, 1, 18 * 640) and audio[1, :, 12 * 640 :].abs().max() == 0
    assert fast_mask[:, 0].sum(-1).tolist() == [int(18 / 1.5) + 1, int(12 / 1.5) + 1]
    assert fast_m.shape[-1] == int(18 / 1.5) + 1


def test_reference_averaging_and_pro_conditioning() -> None:
    model = _tiny("v2Pro")
    _, _, spec = _inputs(batch=1, tokens=3, phones=3)
    sv = torch.randn(2, 1, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        first = model.encode_reference(spec, sv[0])
        second = model.encode_reference(spec[:, :, :20], sv[1])
        mean = model.encode_references([spec, spec[:, :, :20]], [sv[0], sv[1]])
        codes, text, _ = _inputs(batch=1, tokens=4, phones=3)
        audio = model.decode(codes, text, mean, noise_scale=0.0)
    assert first.shape == (1, 32, 1)
    torch.testing.assert_close(mean, (first + second) / 2)
    assert audio.shape == (1, 1, 4 * 1280)
    with pytest.raises(VitsInputError, match="sv_emb"):
        model.encode_reference(spec)
    with pytest.raises(VitsInputError, match="ge must be"):
        model.decode(codes, text, torch.zeros(1, 16, 1))


def test_latent_round_trip_picks_nearest_code() -> None:
    model = _tiny()
    with torch.no_grad():
        model.ssl_proj.weight.zero_()
        model.ssl_proj.bias.zero_()
        model.ssl_proj.weight[:, :, 0] = torch.eye(32)  # (out, in, k): pass the first frame through
        embed = model.quantizer.embed
        want = torch.tensor([[3, 17, 63, 0]])
        frames = embed[want[0]].t() + 0.01  # (D, T25) close to the chosen codes
        ssl = torch.zeros(1, 32, 8)
        ssl[0, :, ::2] = frames
        codes = model.extract_latent(ssl)
    assert torch.equal(codes, want.unsqueeze(0))


@pytest.mark.parametrize("version", ["v2", "v2ProPlus"])
def test_vocoder_reach_is_its_receptive_field(version: str) -> None:
    """``vocoder_reach_frames`` (12 for the official kernels): the audio from a frame on
    does not depend on the frames the reach or more before it, and does on the one two
    frames closer (float64: 2e-9; the frame between is at rounding level, 1e-13)."""
    cfg = VitsConfig.from_hparams(manifest(f"s2_{version}")["config"], version)
    reach, up, start = cfg.vocoder_reach_frames, cfg.upsample_factor, 30
    assert reach == 12
    torch.manual_seed(0)
    vocoder = Generator(
        8,
        cfg.resblock_kernel_sizes,
        cfg.resblock_dilation_sizes,
        cfg.upsample_rates,
        64,  # narrow: the receptive field depends on kernels, rates and dilations only
        cfg.upsample_kernel_sizes,
        4,
    ).double()  # the influence near the edge of the field is below float32's rounding
    z, g = torch.randn(1, 8, 40, dtype=torch.float64), torch.randn(1, 4, 1, dtype=torch.float64)
    far, near = z.clone(), z.clone()
    far[..., : start - reach + 1] = torch.randn_like(far[..., : start - reach + 1]) * 10
    near[..., start - reach + 2] += 1.0
    with torch.no_grad():
        base = vocoder(z, g)[..., start * up :]
        torch.testing.assert_close(vocoder(far, g)[..., start * up :], base, rtol=0, atol=1e-12)
        assert (vocoder(near, g)[..., start * up :] - base).abs().max() > 1e-10


@pytest.mark.parametrize("masked", [False, True])
def test_channels_last_vocoder_is_the_same_function(masked: bool) -> None:
    """``use_channels_last`` (the fast path's vocoder on CUDA): batches go through a twin
    of 2-D channels-last convolutions that computes what the 1-D ones do, padded rows
    masked by their lengths alike; one row stays 1-D; the state dict is unchanged."""
    cfg = VitsConfig.from_hparams(manifest("s2_v2ProPlus")["config"], "v2ProPlus")
    torch.manual_seed(0)
    vocoder = Generator(8, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes,
                        cfg.upsample_rates, 64, cfg.upsample_kernel_sizes, 4).eval()  # fmt: skip
    z, g = torch.randn(3, 8, 20), torch.randn(3, 4, 1)
    lengths = torch.tensor([20, 13, 7]) if masked else None
    keys = {k: v.shape for k, v in vocoder.state_dict().items()}
    with torch.no_grad():
        want, want_one = vocoder(z, g, lengths), vocoder(z[2:, :, :7], g[2:])
        vocoder.use_channels_last()
        twin = vocoder._twin[0]
        assert twin.channels_last and not vocoder.channels_last
        assert twin.conv_pre.weight.is_contiguous(memory_format=torch.channels_last)
        assert {k: v.shape for k, v in vocoder.state_dict().items()} == keys
        calls: list[int] = []
        twin.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
        got, one = vocoder(z, g, lengths), vocoder(z[2:, :, :7], g[2:])
    assert calls == [3]  # the batch went through the twin, the single row did not
    assert got.shape == want.shape == (3, 1, 20 * cfg.upsample_factor)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one, want_one, rtol=0, atol=0)
    if masked:  # a padded row is still its own exact-length decode
        torch.testing.assert_close(got[2:, :, : 7 * cfg.upsample_factor], one, rtol=1e-5, atol=1e-6)
