"""Loading official-format weight files: framing, safety, version/kind detection, strictness.

Full-size files are built from the contract manifests with ``fill()`` and written the way
upstream writes them (fp16, version tags, HParams objects), then loaded through
``wyoming_sovits.checkpoints`` into our modules and compared tensor by tensor.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from contract import filled_state_dict, fold_weight_norm, manifest
from make_tiny_models import TINY_S1_CONFIG, make_tiny_models
from scratch import scratch

from wyoming_sovits import checkpoints as ckpt
from wyoming_sovits.checkpoints import (
    CheckpointFormatError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    UnsupportedVersionError,
    WrongCheckpointKindError,
)

# family -> (kind, version, tag written, HParams module or None)
FAMILIES: dict[str, tuple[str, str, bytes | None, str | None]] = {
    "s1_v1": ("gpt", "v1", None, None),
    "s1_v2": ("gpt", "v2", None, None),
    "s2_v1": ("sovits", "v1", None, None),
    "s2_v2": ("sovits", "v2", None, "utils"),
    "s2_v2Pro": ("sovits", "v2Pro", b"05", None),
    "s2_v2ProPlus": ("sovits", "v2ProPlus", b"06", "GPT_SoVITS.utils"),
    "sv_eres2netv2w24s4": ("sv", "ERes2NetV2", None, None),
}
LOADERS: dict[str, Callable[..., Any]] = {
    "gpt": ckpt.load_gpt,
    "sovits": ckpt.load_sovits,
    "sv": ckpt.load_sv,
}
# A pretrained s2 file keeps the training-only posterior encoder; the loader must drop it.
ENC_Q_EXTRA = "enc_q.proj.weight"


def _official_object(family: str, weights: dict[str, torch.Tensor]) -> Any:
    kind = FAMILIES[family][0]
    if kind == "sv":
        return weights
    if kind == "gpt":
        config = {"model": dict(manifest(family)["config_model"]), "data": {"max_sec": 54}}
        return {"weight": weights, "config": config, "info": "GPT-e12"}
    if family == "s2_v1":
        weights = {**weights, ENC_Q_EXTRA: torch.zeros(384, 192, 1, dtype=torch.float16)}
    return {"weight": weights, "config": manifest(family)["config"], "info": "8epoch_96iteration"}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    with scratch(tmp_path_factory, "tiny") as folder:
        yield make_tiny_models(folder)


def _expected_ours(family: str, stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What our module must hold: the stored fp16 values, mapped by the test-side rules."""
    kind = FAMILIES[family][0]
    official = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    if kind == "gpt":
        return {k.removeprefix("model."): v for k, v in official.items()}
    if kind == "sovits":
        training = ("embed_avg", "cluster_size", "inited")
        official = {k: v for k, v in official.items() if k.rsplit(".", 1)[-1] not in training}
        return fold_weight_norm(official)
    return official


# ------------------------------------------------------------------- full-size, every family


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_full_size_official_file(family: str, tmp_path: Path) -> None:
    """Write as upstream does (fp16, tag, HParams), inspect, load strict, compare every tensor."""
    kind, version, tag, module = FAMILIES[family]
    stored = filled_state_dict(family, dtype=torch.float16)
    path = ckpt.write_checkpoint(
        tmp_path / f"{family}.pth",
        _official_object(family, stored),
        tag=tag,
        hparams_object=module is not None,
        hparams_module=module or "utils",
    )
    assert path.read_bytes()[:2] == (tag or b"PK")
    _check_inspect(family, path)
    loaded = LOADERS[kind](path)
    if kind != "sv":
        assert loaded.version == version
    state = loaded.model.state_dict()
    expected = _expected_ours(family, stored)
    del stored
    assert state.keys() == expected.keys()
    for name, want in expected.items():
        assert state[name].dtype == (torch.float32 if want.is_floating_point() else want.dtype)
        assert torch.equal(state[name], want), name  # fp16 -> fp32 and the fold are exact
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not loaded.model.training
    _check_config(family, loaded)


def _check_inspect(family: str, path: Path) -> None:
    kind, version, tag, _module = FAMILIES[family]
    info = ckpt.inspect_checkpoint(path)
    sd = manifest(family)["state_dict"]
    extra = 384 * 192 if family == "s2_v1" else 0  # the enc_q tensor added above
    assert (info.kind, info.version, info.supported) == (kind, version, True)
    assert info.n_params == sum(torch.Size(shape).numel() for shape, _ in sd.values()) + extra
    assert info.stored_dtype == "float16"
    assert info.tag == (tag.decode() if tag else None)
    if kind == "sovits":
        assert info.config == manifest(family)["config"]  # HParams objects read back as dicts
    elif kind == "gpt":
        assert info.config["model"] == manifest(family)["config_model"]
    else:
        assert (info.config["m_channels"], info.config["base_width"]) == (64, 24)


def _check_config(family: str, loaded: Any) -> None:
    if family.startswith("s1"):
        assert loaded.config.phoneme_vocab_size == (512 if family == "s1_v1" else 732)
        assert loaded.hparams["data"]["max_sec"] == 54 and loaded.info == "GPT-e12"
    elif family.startswith("s2"):
        model_cfg = manifest(family)["config"]["model"]
        assert loaded.config.gin_channels == model_cfg["gin_channels"]
        assert loaded.config.upsample_initial_channel == model_cfg["upsample_initial_channel"]
        assert loaded.info == "8epoch_96iteration"
        if loaded.config.is_pro:
            assert loaded.config.sv_dim == 20480
    else:
        assert loaded.config.embedding_dim == 20480


# --------------------------------------------------------------------------------- safety


class _Exploit:
    """Pickles as a call of ``func(*args)``, as a malicious checkpoint would."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _exploits(marker: Path) -> dict[str, _Exploit]:
    return {
        "os.system": _Exploit(os.system, f"touch {marker}"),
        "builtins.eval": _Exploit(eval, f"open({str(marker)!r}, 'w')"),
        "subprocess": _Exploit(subprocess.call, ["touch", str(marker)]),
        # Passes the pre-scan (module torch); torch's own weights-only unpickler refuses it.
        "torch.save": _Exploit(torch.save, {"pwned": True}, str(marker)),
    }


@pytest.mark.parametrize("exploit", ["os.system", "builtins.eval", "subprocess", "torch.save"])
@pytest.mark.parametrize("tag", [None, b"05"])
def test_malicious_pickle_is_refused_and_never_runs(
    exploit: str, tag: bytes | None, tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    obj = {"weight": {"dec.x": torch.zeros(2)}, "config": _exploits(marker)[exploit]}
    path = ckpt.write_checkpoint(tmp_path / "evil.pth", obj, tag=tag)
    for load in (ckpt.load_sovits, ckpt.load_gpt, ckpt.inspect_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match="refused") as err:
            load(path)
        assert str(path) in str(err.value)
    assert not marker.exists()


def test_malicious_raw_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Exploit(os.system, f"touch {marker}")))
    with pytest.raises(CheckpointFormatError, match="not a torch zip checkpoint"):
        ckpt.load_sovits(path)
    assert not marker.exists()


def test_stack_global_pickles_are_refused(tmp_path: Path) -> None:
    """Protocol-4 pickles name globals indirectly; torch.save never writes them for weights."""
    buffer = io.BytesIO()
    torch.save({"weight": {"dec.x": torch.zeros(2)}}, buffer, pickle_protocol=4)
    path = tmp_path / "p4.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="STACK_GLOBAL"):
        ckpt.read_checkpoint(path)


def test_hparams_under_any_module_path_become_plain_dicts(tmp_path: Path) -> None:
    config = {"model": {"gin_channels": 512, "nested": {"a": [1, 2]}}, "data": {"x": None}}
    for module in ("utils", "GPT_SoVITS.utils", "module.utils"):
        path = ckpt.write_checkpoint(
            tmp_path / "hp.pth",
            {"weight": {"dec.x": torch.zeros(1)}, "config": config},
            hparams_object=True,
            hparams_module=module,
        )
        raw = ckpt.read_checkpoint(path)
        assert raw.obj["config"] == config and type(raw.obj["config"]["model"]) is dict


# ------------------------------------------------------------------------- broken files


def test_truncated_files_are_format_errors(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tiny["sovits_v2Pro"].read_bytes()
    for size in (3, 100, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{size}.pth"
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointFormatError, match=str(path)):
            ckpt.load_sovits(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.inspect_checkpoint(tmp_path / "nope.pth")


def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    raw = ckpt.read_checkpoint(src)
    edit(raw.obj)
    return ckpt.write_checkpoint(dst, raw.obj, tag=raw.tag)


def test_wrong_shape_names_file_tensor_and_shapes(tiny: dict[str, Path], tmp_path: Path) -> None:
    def edit(obj: dict[str, Any]) -> None:
        obj["weight"]["ssl_proj.weight"] = torch.zeros(768, 768, 1, dtype=torch.float16)

    path = _rewrite(tiny["sovits_v2"], tmp_path / "shape.pth", edit)
    with pytest.raises(CheckpointMismatchError) as err:
        ckpt.load_sovits(path)
    message = str(err.value)
    assert str(path) in message and "ssl_proj.weight" in message
    assert "(768, 768, 1)" in message and "(768, 768, 2)" in message


def test_weight_norm_tensor_with_wrong_shape(tiny: dict[str, Path], tmp_path: Path) -> None:
    def edit(obj: dict[str, Any]) -> None:
        v = obj["weight"]["dec.ups.0.weight_v"]
        obj["weight"]["dec.ups.0.weight_v"] = v[:, :, :-1].clone()
        obj["weight"]["dec.ups.0.weight_g"] = obj["weight"]["dec.ups.0.weight_g"].clone()

    with pytest.raises(
        CheckpointMismatchError, match=r"dec\.ups\.0\.weight_g/dec\.ups\.0\.weight_v"
    ):
        ckpt.load_sovits(_rewrite(tiny["sovits_v2"], tmp_path / "wn.pth", edit))


def test_missing_and_unexpected_tensors(tiny: dict[str, Path], tmp_path: Path) -> None:
    def drop(obj: dict[str, Any]) -> None:
        del obj["weight"]["model.h.layers.0.linear1.bias"]

    def add(obj: dict[str, Any]) -> None:
        obj["weight"]["model.extra.weight"] = torch.zeros(3)

    with pytest.raises(
        CheckpointMismatchError, match=r"missing model\.h\.layers\.0\.linear1\.bias"
    ):
        ckpt.load_gpt(_rewrite(tiny["gpt_v2"], tmp_path / "drop.ckpt", drop))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected model\.extra\.weight"):
        ckpt.load_gpt(_rewrite(tiny["gpt_v2"], tmp_path / "add.ckpt", add))


@pytest.mark.parametrize(
    ("given", "loader", "says"),
    [
        ("gpt_v2", ckpt.load_sovits, "is a GPT .* a SoVITS"),
        ("sovits_v2", ckpt.load_gpt, "is a SoVITS .* a GPT"),
        ("sv", ckpt.load_sovits, "is an sv .* a SoVITS"),
        ("sovits_v2Pro", ckpt.load_sv, "is a SoVITS .* an sv"),
    ],
)
def test_wrong_kind_is_named(
    given: str, loader: Callable[..., Any], says: str, tiny: dict[str, Path]
) -> None:
    with pytest.raises(WrongCheckpointKindError, match=says):
        loader(tiny[given])


def test_unknown_layouts_are_format_errors(tmp_path: Path) -> None:
    cases = {
        "names.pth": (
            {"weight": {"foo.bar": torch.zeros(1)}, "config": {"model": {}}},
            "fit neither GPT",
        ),
        "bare.pth": ({"foo.weight": torch.zeros(1)}, "not the ERes2NetV2"),
        "list.pth": ([torch.zeros(1)], "not a GPT-SoVITS weight file"),
    }
    for name, (obj, says) in cases.items():
        with pytest.raises(CheckpointFormatError, match=says):
            ckpt.inspect_checkpoint(ckpt.write_checkpoint(tmp_path / name, obj))


# ---------------------------------------------------------------------- version detection


def test_tiny_files_detect_kind_version_and_tag(tiny: dict[str, Path]) -> None:
    expected = {
        "gpt_v2": ("gpt", "v2", None),
        "sovits_v2": ("sovits", "v2", None),
        "sovits_v2Pro": ("sovits", "v2Pro", "05"),
        "sovits_v2ProPlus": ("sovits", "v2ProPlus", "06"),
        "sv": ("sv", "ERes2NetV2", None),
    }
    for name, (kind, version, tag) in expected.items():
        info = ckpt.inspect_checkpoint(tiny[name])
        assert (info.kind, info.version, info.tag) == (kind, version, tag), name


def test_tag_contradicting_the_tensors_is_an_error(tiny: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "v2-tagged-05.pth"
    path.write_bytes(b"05" + tiny["sovits_v2"].read_bytes()[2:])
    with pytest.raises(CheckpointMismatchError, match=r"tagged v2Pro .* v2"):
        ckpt.load_sovits(path)


def test_legacy_tags_defer_to_the_tensors(tiny: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "v2-tagged-01.pth"
    path.write_bytes(b"01" + tiny["sovits_v2"].read_bytes()[2:])
    assert ckpt.load_sovits(path).version == "v2"


@pytest.mark.parametrize(
    ("tag", "version"), [(b"02", "v3"), (b"03", "v3-LoRA"), (b"04", "v4-LoRA")]
)
def test_v3_v4_are_recognised_but_unsupported(
    tag: bytes, version: str, tiny: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / f"{version}.pth"
    path.write_bytes(tag + tiny["sovits_v2"].read_bytes()[2:])
    info = ckpt.inspect_checkpoint(path)
    assert (info.version, info.supported) == (version, False)
    with pytest.raises(UnsupportedVersionError, match="v1, v2, v2Pro, v2ProPlus"):
        ckpt.load_sovits(path)


def test_cfm_tensors_mean_v3(tiny: dict[str, Path], tmp_path: Path) -> None:
    def edit(obj: dict[str, Any]) -> None:
        obj["weight"]["cfm.estimator.proj_out.weight"] = torch.zeros(100, 1024)

    path = _rewrite(tiny["sovits_v2"], tmp_path / "cfm.pth", edit)
    with pytest.raises(UnsupportedVersionError, match="SoVITS v3 file"):
        ckpt.load_sovits(path)


def test_pretrained_md5_table_comes_first(tiny: dict[str, Path]) -> None:
    raw = ckpt.read_checkpoint(tiny["sovits_v2"])
    v4 = next(h for h, v in ckpt.PRETRAINED_MD5.items() if v == "v4")
    assert ckpt.sovits_version(raw) == "v2"
    assert ckpt.sovits_version(_with_md5(raw, v4)) == "v4"
    v2pro = next(h for h, v in ckpt.PRETRAINED_MD5.items() if v == "v2Pro")
    with pytest.raises(CheckpointMismatchError):
        ckpt.sovits_version(_with_md5(raw, v2pro))  # v2 tensors under the v2Pro hash
    assert raw.head_md5 == hashlib.md5(tiny["sovits_v2"].read_bytes()[:8192]).hexdigest()


def _with_md5(raw: ckpt.RawCheckpoint, md5: str) -> ckpt.RawCheckpoint:
    return ckpt.RawCheckpoint(raw.path, raw.obj, raw.tag, md5, raw.size)


def test_s1_version_from_config_and_rows(tiny: dict[str, Path], tmp_path: Path) -> None:
    def lie(obj: dict[str, Any]) -> None:
        obj["config"]["model"]["phoneme_vocab_size"] = 512

    with pytest.raises(CheckpointMismatchError, match=r"phoneme_vocab_size 512 .* 732 rows"):
        ckpt.load_gpt(_rewrite(tiny["gpt_v2"], tmp_path / "lie.ckpt", lie))

    def odd(obj: dict[str, Any]) -> None:
        obj["config"]["model"]["phoneme_vocab_size"] = 600
        obj["weight"]["model.ar_text_embedding.word_embeddings.weight"] = torch.zeros(600, 32)

    with pytest.raises(UnsupportedVersionError, match="512 \\(v1\\), 732"):
        ckpt.inspect_checkpoint(_rewrite(tiny["gpt_v2"], tmp_path / "odd.ckpt", odd))


# ------------------------------------------------------------------ mapping, dtype, writer


def test_name_mapping_round_trips_official_names() -> None:
    official = filled_state_dict("s2_v2", dtype=torch.float16)
    ours = ckpt.official_to_ours("sovits", official, Path("x"))
    assert not any(k.endswith((".weight_g", ".weight_v", ".embed_avg")) for k in ours)
    back = ckpt.ours_to_official("sovits", ours)
    assert back.keys() == official.keys()
    assert all(back[k].shape == official[k].shape for k in official)
    folded = [k for k in ours if k + "_g" in official]
    assert len(folded) == 131
    again = ckpt.official_to_ours(
        "sovits", {k: back[k] for k in back if k[:-2] in folded}, Path("x")
    )
    for name in folded:
        torch.testing.assert_close(again[name], ours[name], rtol=1e-5, atol=1e-6)


def test_lone_weight_norm_half_is_a_format_error() -> None:
    official = {"dec.ups.0.weight_g": torch.ones(4, 1, 1)}
    with pytest.raises(CheckpointFormatError, match="weight_v must both be present"):
        ckpt.official_to_ours("sovits", official, Path("x"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_stored_fp16_is_cast_to_the_requested_dtype(
    tiny: dict[str, Path], dtype: torch.dtype
) -> None:
    model = ckpt.load_sovits(tiny["sovits_v2Pro"], dtype=dtype).model
    assert {p.dtype for p in model.parameters()} == {dtype}
    gpt = ckpt.load_gpt(tiny["gpt_v2"], dtype=dtype).model
    assert {p.dtype for p in gpt.parameters()} == {dtype}
    with pytest.raises(ValueError, match="floating"):
        ckpt.load_gpt(tiny["gpt_v2"], dtype=torch.int8)


def test_tiny_models_are_deterministic_and_framed(tiny: dict[str, Path], tmp_path: Path) -> None:
    again = make_tiny_models(tmp_path)
    for name, path in tiny.items():
        assert again[name].read_bytes() == path.read_bytes(), name
    data = tiny["sovits_v2ProPlus"].read_bytes()
    assert data[:4] == b"06\x03\x04"
    with zipfile.ZipFile(io.BytesIO(b"PK" + data[2:])) as archive:
        pickled = archive.read("archive/data.pkl")
    assert b"utils\nHParams" in pickled  # config stored as upstream's HParams object
    gpt = ckpt.load_gpt(tiny["gpt_v2"])
    assert gpt.config.vocab_size == 1025 and gpt.config.phoneme_vocab_size == 732
    assert gpt.hparams["model"] == TINY_S1_CONFIG["model"]
    sovits = ckpt.load_sovits(tiny["sovits_v2ProPlus"])
    sv = ckpt.load_sv(tiny["sv"])
    assert sovits.config.sv_dim == sv.config.embedding_dim
