"""Speaker-verification encoder (ERes2NetV2) and its Kaldi filterbank against the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from contract import filled_state_dict, manifest

from wyoming_sovits.models.sv import (
    FbankInputError,
    SpeakerEncoder,
    SVConfig,
    SVConfigError,
    kaldi_fbank,
)

FAMILY = "sv_eres2netv2w24s4"


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.fixture(scope="module")
def golden(contract_dir: Path) -> dict[str, torch.Tensor]:
    with np.load(contract_dir / "golden_sv.npz") as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


@pytest.fixture(scope="module")
def filled_encoder() -> SpeakerEncoder:
    state = filled_state_dict(FAMILY)
    model = SpeakerEncoder(SVConfig.infer(state))
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_state_dict_matches_manifest() -> None:
    ours = {k: list(v.shape) for k, v in SpeakerEncoder().state_dict().items()}
    official = {k: shape for k, (shape, _) in manifest(FAMILY)["state_dict"].items()}
    assert len(official) == 1001
    assert ours == official


def test_infer_recovers_default_config() -> None:
    assert SVConfig.infer(filled_state_dict(FAMILY)) == SVConfig()


@pytest.mark.parametrize(
    "cfg",
    [
        SVConfig(
            m_channels=8,
            base_width=24,
            scale=2,
            expansion=2,
            num_blocks=(1, 2, 1, 1),
            embedding_size=16,
        ),
        SVConfig(
            feat_dim=16, m_channels=4, base_width=32, scale=3, expansion=1, num_blocks=(2, 1, 1, 2)
        ),
    ],
)
def test_infer_round_trip_tiny(cfg: SVConfig) -> None:
    torch.manual_seed(0)
    model = SpeakerEncoder(cfg)
    inferred = SVConfig.infer(model.state_dict())
    rebuilt = SpeakerEncoder(inferred)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    rebuilt.eval()
    feats = torch.randn(2, 37, cfg.feat_dim)
    with torch.no_grad():
        out = rebuilt(feats)
        assert torch.equal(out, model(feats))
    assert out.shape == (2, cfg.embedding_dim)
    assert inferred.stage_width(0) == cfg.stage_width(0)


def test_infer_rejects_foreign_state_dict() -> None:
    with pytest.raises(SVConfigError, match=r"conv1\.weight"):
        SVConfig.infer({"weight": torch.zeros(3)})


def test_fbank_matches_golden(golden: dict[str, torch.Tensor]) -> None:
    feats = kaldi_fbank(golden["wav16k"])  # (1, 298, 80)
    assert feats.shape == golden["fbank"].shape
    assert rel_l2(feats, golden["fbank"]) < 1e-4
    # A 1-D waveform gives the unbatched matrix.
    assert torch.equal(kaldi_fbank(golden["wav16k"][0]), feats[0])


def test_fbank_frame_count_and_errors() -> None:
    wav = torch.randn(16000)
    assert kaldi_fbank(wav).shape == (1 + (16000 - 400) // 160, 80)
    with pytest.raises(FbankInputError, match="at least 400"):
        kaldi_fbank(torch.zeros(399))
    with pytest.raises(FbankInputError, match="shape"):
        kaldi_fbank(torch.zeros(1, 1, 800))


@pytest.mark.slow
def test_embedding_matches_golden(
    filled_encoder: SpeakerEncoder, golden: dict[str, torch.Tensor]
) -> None:
    with torch.no_grad():
        from_wave = filled_encoder.embed(golden["wav16k"])  # (1, 20480)
        from_fbank = filled_encoder(golden["fbank"])
    assert from_wave.shape == golden["sv_emb"].shape == (1, 20480)
    assert rel_l2(from_wave, golden["sv_emb"]) < 1e-4
    assert rel_l2(from_fbank, golden["sv_emb"]) < 1e-4
