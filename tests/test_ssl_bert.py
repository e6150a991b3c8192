"""HuBERT and BERT front-end wrappers, loaded from local folders like the real models.

Real configs and the real tokenizer come from the PyPI wheel ``gpt-sovits-cpufast==0.1.0``
(installed test-only with ``pip install --no-deps``); weights are random (tiny models) or
the contract's ``fill()`` (full-size checks against the pipeline goldens).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from contract import fill
from pretrained import pretrained_dir
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, HubertConfig, HubertModel

from wyoming_sovits.models.bert import BertAlignmentError, BertFeatures, BertModelError
from wyoming_sovits.models.ssl import (
    PROMPT_PAD_SAMPLES,
    HubertEncoder,
    SSLInputError,
    SSLModelError,
    hubert_frames,
)

HUBERT = "chinese-hubert-base"
BERT = "chinese-roberta-wwm-ext-large"


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def save_official_hubert(model: HubertModel, folder: Path) -> None:
    """Write the released layout: weight-norm pair as ``weight_g``/``weight_v`` in pytorch_model.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    shutil.copy(pretrained_dir(HUBERT) / "preprocessor_config.json", folder)
    renames = {
        "parametrizations.weight.original0": "weight_g",
        "parametrizations.weight.original1": "weight_v",
    }
    state = {}
    for name, t in model.state_dict().items():
        for old, new in renames.items():
            name = name.replace(old, new)
        state[name] = t
    torch.save(state, folder / "pytorch_model.bin")


def tiny_hubert_config() -> HubertConfig:
    raw = json.loads((pretrained_dir(HUBERT) / "config.json").read_text())
    raw.update(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * 7,  # kernels and strides stay: they set the frame rate
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        torch_dtype="float32",
    )
    return HubertConfig.from_dict(raw)


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory: pytest.TempPathFactory) -> tuple[HubertModel, Path]:
    torch.manual_seed(0)
    model = HubertModel(tiny_hubert_config()).eval()
    folder = tmp_path_factory.mktemp("hubert")
    save_official_hubert(model, folder)
    return model, folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[BertForMaskedLM, Path]:
    raw = json.loads((pretrained_dir(BERT) / "config.json").read_text())
    raw.update(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig.from_dict(raw)).eval()
    folder = tmp_path_factory.mktemp("bert")
    model.save_pretrained(folder)
    shutil.copy(pretrained_dir(BERT) / "tokenizer.json", folder)
    return model, folder


# --- HuBERT ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [400, 16000, 48001])
def test_hubert_shape_and_padding(tiny_hubert: tuple[HubertModel, Path], n: int) -> None:
    model, folder = tiny_hubert
    encoder = HubertEncoder.load(folder)
    wav = torch.randn(2, n) * 0.1
    out = encoder(wav)
    frames = (n + PROMPT_PAD_SAMPLES - 400) // 320 + 1
    assert hubert_frames(n + PROMPT_PAD_SAMPLES) == frames
    assert out.shape == (2, 32, frames)
    # Raw samples (no feature-extractor normalisation) plus 9600 zeros, weights mapped from weight_g/v.
    padded = torch.cat([wav, torch.zeros(2, PROMPT_PAD_SAMPLES)], dim=1)
    with torch.no_grad():
        ref = model(padded).last_hidden_state.transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert encoder(wav[0]).shape == (1, 32, frames)


def test_hubert_errors(tiny_hubert: tuple[HubertModel, Path], tmp_path: Path) -> None:
    encoder = HubertEncoder(tiny_hubert[0], pad_samples=0)
    with pytest.raises(SSLInputError, match="shorter than one HuBERT frame"):
        encoder(torch.zeros(399))
    with pytest.raises(SSLInputError, match="shape"):
        encoder(torch.zeros(1, 1, 800))
    with pytest.raises(SSLModelError, match=r"no config\.json"):
        HubertEncoder.load(tmp_path)
    shutil.copy(tiny_hubert[1] / "config.json", tmp_path)  # config but no weights
    with pytest.raises(SSLModelError, match="cannot load HuBERT"):
        HubertEncoder.load(tmp_path)


# --- BERT ------------------------------------------------------------------------------


def reference_bert(
    model: BertForMaskedLM, tokenizer: object, text: str, word2ph: list[int]
) -> torch.Tensor:
    """The definition: full model, hidden_states[-3], drop [CLS]/[SEP], repeat per word2ph."""
    enc = tokenizer(text, return_tensors="pt")  # type: ignore[operator]
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-3][0][1:-1]
    return torch.cat([hidden[i].repeat(n, 1) for i, n in enumerate(word2ph)]).T


def test_bert_word2ph_expansion(tiny_bert: tuple[BertForMaskedLM, Path]) -> None:
    model, folder = tiny_bert
    features = BertFeatures.load(folder)
    assert len(features.encoder.encoder.layer) == 2  # top two of four dropped
    text, word2ph = "今天天气很好,我们去公园.", [2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 1]
    out = features(text, word2ph)
    assert out.shape == (32, sum(word2ph))
    torch.testing.assert_close(out, reference_bert(model, features.tokenizer, text, word2ph))
    # Phones of one character share its vector; a 0-phone character contributes nothing.
    assert torch.equal(out[:, 0], out[:, 1])
    assert features("好的", [0, 3]).shape == (32, 3)


def test_bert_alignment_errors(tiny_bert: tuple[BertForMaskedLM, Path], tmp_path: Path) -> None:
    features = BertFeatures.load(tiny_bert[1])
    with pytest.raises(BertAlignmentError, match="one token per character"):
        features("hello", [1, 1, 1, 1, 1])  # one word-piece for five characters
    with pytest.raises(BertAlignmentError, match="2 entries but the text has 3"):
        features("你好吗", [2, 2])
    with pytest.raises(BertAlignmentError, match="exceeds BERT's 510"):
        features("好" * 511, [2] * 511)
    with pytest.raises(BertModelError, match=r"no config\.json"):
        BertFeatures.load(tmp_path)


# --- full size, fill() weights, against the pipeline goldens ----------------------------


def filled_file_state(family: str, contract_dir: Path) -> dict[str, torch.Tensor]:
    """Tensors of ``model_files.json`` under their file names; tied copies share values."""
    spec = json.loads((contract_dir / "pipeline" / "model_files.json").read_text())["models"][
        family
    ]
    tied = spec.get("tied", {})
    state: dict[str, torch.Tensor] = {}
    for name, shape, _dtype, _digest in spec["tensors"]:
        if name not in tied:
            state[name] = fill(name, shape, torch.float32)
    for name, owner in tied.items():
        state[name] = state[owner]
    return state


@pytest.fixture(scope="module")
def case_a(contract_dir: Path) -> dict[str, np.ndarray]:
    with np.load(contract_dir / "pipeline" / "case_a.npz") as z:
        return {k: z[k] for k in ("wav16k", "hubert_last_hidden_state")}


@pytest.mark.slow
def test_full_hubert_matches_pipeline_golden(
    contract_dir: Path, case_a: dict[str, np.ndarray], tmp_path: Path
) -> None:
    start = time.perf_counter()
    folder = tmp_path / HUBERT
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(pretrained_dir(HUBERT) / name, folder)
    torch.save(filled_file_state("hubert", contract_dir), folder / "pytorch_model.bin")
    encoder = HubertEncoder.load(folder)
    out = encoder(torch.from_numpy(case_a["wav16k"]))  # (1, 768, 229)
    golden = torch.from_numpy(case_a["hubert_last_hidden_state"]).transpose(1, 2)
    assert out.shape == golden.shape == (1, 768, 229)
    assert rel_l2(out, golden) < 1e-4
    print(f"full-size HuBERT check: {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
def test_full_bert_matches_pipeline_golden(contract_dir: Path) -> None:
    """Cases b and c: prompt and fragment BERT features from the fill() roberta-large."""
    start = time.perf_counter()
    # Folder loading is covered by the tiny model; here the 1.3 GB file is not written
    # (it would double the test's time): transformers loads the same dict from memory.
    folder = pretrained_dir(BERT)
    model = BertForMaskedLM.from_pretrained(
        None,
        config=BertConfig.from_pretrained(folder, local_files_only=True),
        state_dict=filled_file_state("bert", contract_dir),
    )
    features = BertFeatures(
        AutoTokenizer.from_pretrained(folder, local_files_only=True), model.bert
    )
    checked = 0
    for case in ("b", "c"):  # b: all Chinese; c: Chinese and English segments mixed
        with np.load(contract_dir / "pipeline" / f"case_{case}.npz") as z:
            meta = json.loads(str(z["meta_json"]))
            goldens = {k: z[k] for k in z.files if k.endswith("bert")}
        frontends = {"prompt_bert": meta["prompt_frontend"]}
        for run, info in meta["runs"].items():
            for i, fragment in enumerate(info["fragments"]):
                frontends[f"{run}__frag{i}__bert"] = fragment["frontend"]
        assert set(frontends) == set(goldens)
        for key, frontend in frontends.items():
            out = _features_like_reference(features, frontend["attempts"][-1]["segments"])
            golden = torch.from_numpy(goldens[key])
            assert out.shape == golden.shape, (case, key)
            assert rel_l2(out, golden) < 1e-4, (case, key)
            checked += 1
    print(f"full-size BERT check ({checked} texts): {time.perf_counter() - start:.1f} s")


def _features_like_reference(features: BertFeatures, segments: list[dict]) -> torch.Tensor:
    """Chinese segments get BERT features, other languages zeros, concatenated over phones."""
    parts = []
    for seg in segments:
        if seg["lang"] == "zh":
            parts.append(features(seg["norm_text"], seg["word2ph"]))
        else:
            parts.append(torch.zeros(features.hidden_size, len(seg["phone_ids"])))
    return torch.cat(parts, dim=1)
