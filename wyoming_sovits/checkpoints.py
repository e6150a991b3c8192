"""Read and write the official GPT-SoVITS weight files without running their pickles.

Upstream loads every file with ``torch.load(weights_only=False)``, which executes whatever
the pickle says. Here a file is unpickled only by torch's weights-only unpickler, after a
scan of its pickle that refuses any global other than tensors, ``OrderedDict`` and
upstream's ``HParams`` (which is mapped to a plain attribute holder and never imported).

File families (REFERENCE-NOTES §2):

* ``gpt`` (s1 ``.ckpt``): ``{"weight": {"model.<name>": fp16}, "config": dict, "info": str}``.
* ``sovits`` (s2 ``.pth``): ``{"weight": ..., "config": dict | HParams, "info": str}``; the
  first two bytes ``PK`` of the zip may be replaced by a version tag (``05`` v2Pro, ...).
* ``sv`` (ERes2NetV2 ``.ckpt``): a bare state dict.

Names are mapped at this edge: ``model.`` is stripped from s1 names, s2 weight-norm pairs are
folded into one weight, training-only s2 tensors are dropped; writing does the reverse.
Every tensor is then checked against the freshly built module before anything is copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import pickletools
import re
import sys
import threading
import types
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .models.sv import SpeakerEncoder, SVConfig
    from .models.t2s import T2SConfig, Text2Semantic
    from .models.vits import SoVITS, VitsConfig

Kind = Literal["gpt", "sovits", "sv"]
KINDS: tuple[Kind, ...] = ("gpt", "sovits", "sv")
GPT_VERSIONS = ("v1", "v2")
SOVITS_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
SV_VERSION = "ERes2NetV2"

# Tag that replaces the zip's "PK" -> (model version, is LoRA). Upstream writes 03-06 today.
TAG_VERSIONS: dict[bytes, tuple[str, bool]] = {
    b"00": ("v1", False),
    b"01": ("v2", False),
    b"02": ("v3", False),
    b"03": ("v3", True),
    b"04": ("v4", True),
    b"05": ("v2Pro", False),
    b"06": ("v2ProPlus", False),
}
# What upstream writes for full (non-LoRA) models; v1/v2 files keep "PK".
VERSION_TAGS: dict[str, bytes] = {"v2Pro": b"05", "v2ProPlus": b"06"}
# MD5 of the first 8 KiB of the released pretrained s2 files -> model version. The s2G488k
# entry says v2 upstream too; the text-embedding rows then make it v1 (REFERENCE-NOTES §2.3).
PRETRAINED_MD5: dict[str, str] = {
    "dc3c97e17592963677a4a1681f30c653": "v2",  # s2G488k.pth
    "6642b37f3dbb1f76882b69937c95a5f3": "v2",  # s2G2333k.pth
    "43797be674a37c1c83ee81081941ed0f": "v3",  # s2Gv3.pth
    "4f26b9476d0c5033e04162c486074374": "v4",  # s2Gv4.pth
    "c7e9fce2223f3db685cdfa1e6368728a": "v2Pro",  # s2Gv2Pro.pth
    "66b313e39455b57ab1b0bc0b239c9d0a": "v2ProPlus",  # s2Gv2ProPlus.pth
}
_HEAD_BYTES = 8192

_GPT_PREFIX = "model."
_GPT_TEXT_EMBEDDING = "model.ar_text_embedding.word_embeddings.weight"
_GPT_SYMBOLS = {512: "v1", 732: "v2"}
_S2_SYMBOLS = {322: "v1", 732: "v2"}
_S2_PRO_WIDTHS = {512: "v2Pro", 768: "v2ProPlus"}
_S2_PREFIXES = ("enc_p.", "dec.", "flow.", "ssl_proj.", "quantizer.", "ref_enc.", "cfm.")
_CODEBOOK = "quantizer.vq.layers.0._codebook."
# Training state of the EMA codebook, rebuilt when writing (embed_avg = embed, counts 1).
_CODEBOOK_TRAINING = ("embed_avg", "cluster_size", "inited")
_WEIGHT_NORM = re.compile(
    r"(dec\.ups\.\d+|dec\.resblocks\.\d+\.convs[12]\.\d+"
    r"|flow\.flows\.\d+\.enc\.(?:cond_layer|in_layers\.\d+|res_skip_layers\.\d+))\.weight"
)

# Globals a torch.save pickle may name. Everything under torch is then judged again by
# torch's own weights-only unpickler; anything else is refused before unpickling starts.
_PLAIN_GLOBALS = {("collections", "OrderedDict"), ("_codecs", "encode")}
_REFUSED_OPCODES = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"}
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# torch's safe-globals registry and sys.modules are process-wide; serialise our edits.
_GLOBALS_LOCK = threading.Lock()


class CheckpointError(Exception):
    """A weight file cannot be used; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle refers to code other than tensors and plain data; nothing was run."""


class CheckpointFormatError(CheckpointError):
    """The file is not a (complete) GPT-SoVITS checkpoint in a known framing."""


class CheckpointMismatchError(CheckpointError):
    """Tensor names or shapes differ from what the detected model needs."""


class WrongCheckpointKindError(CheckpointMismatchError):
    """A GPT file was given where a SoVITS (or sv) file was expected, or the reverse."""


class UnsupportedVersionError(CheckpointError):
    """A real GPT-SoVITS file of a version this server does not implement (v3/v4, LoRA)."""


class StoredHParams:
    """Stand-in for upstream's pickled ``utils.HParams``: keeps its attributes, runs nothing."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError("an HParams object must hold a dict of named values")
        self.values = dict(state)


@dataclass(frozen=True)
class RawCheckpoint:
    """An unpickled file, ``HParams`` already turned into plain dicts."""

    path: Path
    obj: Any
    tag: bytes | None  # the two bytes that replaced "PK", if any
    head_md5: str  # MD5 of the first 8 KiB as stored (upstream's pretrained-file key)
    size: int


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``models inspect`` reports about a file."""

    path: Path
    kind: Kind
    version: str
    supported: bool
    n_params: int  # values in all stored tensors (s2: as stored, incl. enc_q if present)
    n_tensors: int
    stored_dtype: str
    config: dict[str, Any]
    info: str
    tag: str | None


@dataclass(frozen=True)
class LoadedGPT:
    model: Text2Semantic
    config: T2SConfig
    version: str
    hparams: dict[str, Any]  # the file's whole "config" (data.max_sec, model, ...)
    info: str
    path: Path


@dataclass(frozen=True)
class LoadedSoVITS:
    model: SoVITS
    config: VitsConfig
    version: str
    hparams: dict[str, Any]  # the file's "config" as a plain dict ("model", "data", ...)
    info: str
    path: Path


@dataclass(frozen=True)
class LoadedSV:
    model: SpeakerEncoder
    config: SVConfig
    path: Path


# ---------------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Unpickle ``path`` safely (zip framing, version tag, restricted globals)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the file: {err.strerror or err}") from err
    head_md5 = hashlib.md5(data[:_HEAD_BYTES], usedforsecurity=False).hexdigest()
    data, tag = _restore_zip_magic(data, path)
    hparams_modules = _scan_pickle(_data_pickle(data, path), path)
    obj = _torch_load(data, hparams_modules, path)
    return RawCheckpoint(path, _plain(obj), tag, head_md5, len(data))


def _restore_zip_magic(data: bytes, path: Path) -> tuple[bytes, bytes | None]:
    """Undo upstream's framing trick: a version tag written over the zip's ``PK``."""
    if len(data) < 4:
        raise CheckpointFormatError(f"{path}: only {len(data)} bytes; not a weight file")
    head = data[:2]
    if head == b"PK":
        return data, None
    if head in TAG_VERSIONS and data[2:4] == b"\x03\x04":
        return b"PK" + data[2:], head
    raise CheckpointFormatError(
        f"{path}: not a torch zip checkpoint (starts with {data[:4]!r}); expected 'PK' or a "
        f"GPT-SoVITS version tag {sorted(t.decode() for t in TAG_VERSIONS)}. Raw pickles and "
        "pre-1.6 torch files are not read; re-save the weights with a current torch.save"
    )


def _data_pickle(data: bytes, path: Path) -> bytes:
    """The ``<archive>/data.pkl`` member, which holds everything but the tensor bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(names) != 1:
                raise CheckpointFormatError(f"{path}: a zip file, but not a torch checkpoint")
            return archive.read(names[0])
    except (zipfile.BadZipFile, EOFError, ValueError) as err:
        raise CheckpointFormatError(f"{path}: truncated or corrupt checkpoint ({err})") from err


def _scan_pickle(pickle_bytes: bytes, path: Path) -> list[str]:
    """Refuse unknown globals before unpickling; return the modules that name ``HParams``."""
    hparams_modules: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(pickle_bytes):
            if opcode.name in _REFUSED_OPCODES:
                raise UnsafeCheckpointError(
                    f"{path}: refused: its pickle uses opcode {opcode.name}, which torch.save "
                    "never writes for weights; nothing was loaded"
                )
            if opcode.name != "GLOBAL":
                continue
            module, _, name = str(arg).partition(" ")
            if name == "HParams" and _MODULE_NAME.fullmatch(module):
                hparams_modules.append(module)
            elif not _plain_global(module, name):
                raise UnsafeCheckpointError(
                    f"{path}: refused: its pickle refers to {module}.{name}, which is not a "
                    "tensor, a plain container or GPT-SoVITS HParams; loading it could run "
                    "code. Nothing was loaded; only use weight files from a source you trust"
                )
    except ValueError as err:  # pickletools: malformed or truncated opcode stream
        raise CheckpointFormatError(f"{path}: corrupt pickle in the checkpoint ({err})") from err
    return sorted(set(hparams_modules))


def _plain_global(module: str, name: str) -> bool:
    return (module, name) in _PLAIN_GLOBALS or module == "torch" or module.startswith("torch.")


def _torch_load(data: bytes, hparams_modules: list[str], path: Path) -> Any:
    """torch's weights-only unpickler, with ``<module>.HParams`` mapped to StoredHParams."""
    aliases: list[Any] = [(StoredHParams, f"{m}.HParams") for m in hparams_modules]
    try:
        with _GLOBALS_LOCK, torch.serialization.safe_globals(aliases):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path}: refused by torch's weights-only unpickler ({_unpickler_reason(err)}); "
            "nothing was run. Only use weight files from a source you trust"
        ) from err
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise CheckpointFormatError(f"{path}: truncated or corrupt checkpoint ({err})") from err


def _unpickler_reason(err: Exception) -> str:
    """The one informative line of torch's multi-paragraph weights-only error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            # Drop torch's advice to allow-list the global: not something a user should do.
            return line.split("WeightsUnpickler error:", 1)[1].split(". Please use")[0].strip()
    return lines[0] if lines else type(err).__name__


def _plain(obj: Any) -> Any:
    """StoredHParams -> dict, recursively; tensors and scalars untouched."""
    if isinstance(obj, StoredHParams):
        return {k: _plain(v) for k, v in obj.values.items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v) for v in obj)
    return obj


# ------------------------------------------------------------------------- kind and version


def detect_kind(raw: RawCheckpoint) -> Kind:
    """gpt / sovits / sv, from the file's layout and tensor names."""
    obj, path = raw.obj, raw.path
    if isinstance(obj, dict) and isinstance(obj.get("weight"), dict):
        names = list(obj["weight"])
        if names and all(n.startswith(_GPT_PREFIX) for n in names):
            return "gpt"
        if any(n.startswith(_S2_PREFIXES) for n in names):
            return "sovits"
        raise CheckpointFormatError(
            f"{path}: has a 'weight' dict whose names fit neither GPT (model.*) nor SoVITS "
            "(enc_p.*, dec.*, ...)"
        )
    if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        if "conv1.weight" in obj and any(k.startswith("layer1.") for k in obj):
            return "sv"
        raise CheckpointFormatError(
            f"{path}: a bare state dict, but not the ERes2NetV2 speaker-verification model "
            "(no conv1.weight / layer1.* tensors)"
        )
    if isinstance(obj, dict) and "generator" in obj:
        raise UnsupportedVersionError(f"{path}: a BigVGAN vocoder (v3); only v1/v2/v2Pro/ProPlus")
    raise CheckpointFormatError(
        f"{path}: not a GPT-SoVITS weight file: expected a dict with 'weight' and 'config' "
        "(GPT .ckpt / SoVITS .pth) or a bare ERes2NetV2 state dict"
    )


def _weights(raw: RawCheckpoint, kind: Kind) -> dict[str, Tensor]:
    weights = raw.obj if kind == "sv" else raw.obj["weight"]
    bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointFormatError(f"{raw.path}: weight entry {bad[0]!r} is not a named tensor")
    return weights


def _hparams(raw: RawCheckpoint) -> dict[str, Any]:
    config = raw.obj.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointFormatError(
            f"{raw.path}: the file's 'config' must be a dict (or HParams) with a 'model' block"
        )
    return config


def gpt_version(raw: RawCheckpoint) -> str:
    """v1 or v2, from ``config["model"]["phoneme_vocab_size"]`` and the text-embedding rows."""
    stored = _hparams(raw)["model"].get("phoneme_vocab_size")
    embedding = _weights(raw, "gpt").get(_GPT_TEXT_EMBEDDING)
    rows = None if embedding is None else int(embedding.shape[0])
    if stored is not None and rows is not None and int(stored) != rows:
        raise CheckpointMismatchError(
            f"{raw.path}: config says phoneme_vocab_size {stored} but {_GPT_TEXT_EMBEDDING} "
            f"has {rows} rows"
        )
    vocab = int(stored) if stored is not None else rows
    if vocab not in _GPT_SYMBOLS:
        raise UnsupportedVersionError(
            f"{raw.path}: GPT phoneme vocabulary {vocab}; supported: 512 (v1), 732 (v2 and later)"
        )
    return _GPT_SYMBOLS[vocab]


def sovits_version(raw: RawCheckpoint) -> str:
    """Upstream's order: pretrained MD5, then the tag, then tensor shapes (REFERENCE-NOTES §2.3).

    Returns one of SOVITS_VERSIONS, or ``v3``/``v4``/``v3-LoRA``/``v4-LoRA`` for files this
    server recognises but cannot run (see :func:`require_supported_sovits`).
    """
    declared, lora = PRETRAINED_MD5.get(raw.head_md5), False
    if declared is None and raw.tag is not None:
        declared, lora = TAG_VERSIONS[raw.tag]
    weights = _weights(raw, "sovits")
    lora = lora or "lora_rank" in raw.obj
    if lora or declared in ("v3", "v4") or any(n.startswith("cfm.") for n in weights):
        base = declared if declared in ("v3", "v4") else "v3"
        return f"{base}-LoRA" if lora else base
    found = _sovits_version_from_shapes(raw, weights)
    if declared in _S2_PRO_WIDTHS.values() and found != declared:
        raise CheckpointMismatchError(
            f"{raw.path}: the file is tagged {declared} but its tensors are those of {found}"
        )
    return found


def _sovits_version_from_shapes(raw: RawCheckpoint, weights: Mapping[str, Tensor]) -> str:
    if "sv_emb.weight" in weights:
        width = (
            int(weights["dec.conv_pre.weight"].shape[0]) if "dec.conv_pre.weight" in weights else 0
        )
        if width not in _S2_PRO_WIDTHS:
            raise CheckpointMismatchError(
                f"{raw.path}: has sv_emb (v2Pro family) but dec.conv_pre.weight has {width} "
                "output channels; expected 512 (v2Pro) or 768 (v2ProPlus)"
            )
        return _S2_PRO_WIDTHS[width]
    embedding = weights.get("enc_p.text_embedding.weight")
    rows = 732 if embedding is None else int(embedding.shape[0])  # absent -> v2, as upstream
    if rows not in _S2_SYMBOLS:
        raise CheckpointMismatchError(
            f"{raw.path}: enc_p.text_embedding.weight has {rows} rows; expected 322 (v1) or 732 (v2)"
        )
    return _S2_SYMBOLS[rows]


def require_supported_sovits(version: str, path: Path) -> None:
    if version not in SOVITS_VERSIONS:
        raise UnsupportedVersionError(
            f"{path}: a SoVITS {version} file; this server runs {', '.join(SOVITS_VERSIONS)} "
            "(use the v2ProPlus or v2Pro weights for the best quality at v2 speed)"
        )


# ----------------------------------------------------------------------------- name mapping


def official_to_ours(kind: Kind, weights: Mapping[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Official tensor names -> the names our modules use (see the module docstring)."""
    if kind == "gpt":
        return {name[len(_GPT_PREFIX) :]: t for name, t in weights.items()}
    if kind == "sv":
        return dict(weights)
    out: dict[str, Tensor] = {}
    for name, t in weights.items():
        if name.startswith("enc_q.") or _is_codebook_training(name):
            continue
        if name.endswith(("_g", "_v")) and _WEIGHT_NORM.fullmatch(name[:-2]):
            base = name[:-2]
            if name.endswith("_v"):
                continue
            out[base] = _fold_weight_norm(weights, base, path)
        else:
            out[name] = t
    return out


def _is_codebook_training(name: str) -> bool:
    return name.startswith(_CODEBOOK) and name[len(_CODEBOOK) :] in _CODEBOOK_TRAINING


def _fold_weight_norm(weights: Mapping[str, Tensor], base: str, path: Path) -> Tensor:
    """w = g · v / ‖v‖, the norm over every dim but 0, computed in float32."""
    g, v = weights.get(base + "_g"), weights.get(base + "_v")
    if g is None or v is None:
        raise CheckpointFormatError(f"{path}: {base}_g and {base}_v must both be present")
    if g.dim() != v.dim() or g.shape[0] != v.shape[0]:
        raise CheckpointMismatchError(
            f"{path}: {base}_g {tuple(g.shape)} does not fit {base}_v {tuple(v.shape)}"
        )
    return torch._weight_norm(v.float(), g.float(), 0)


def ours_to_official(kind: Kind, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our names -> official names: the inverse of :func:`official_to_ours` (minus enc_q)."""
    if kind == "gpt":
        return {_GPT_PREFIX + name: t for name, t in state_dict.items()}
    if kind == "sv":
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    for name, t in state_dict.items():
        if _WEIGHT_NORM.fullmatch(name):
            # Any (g, v) that reproduces w is valid; g = ‖w‖ per output slice, v = w is simplest.
            g = t.float().flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))  # (C, 1, 1)
            out[name + "_g"], out[name + "_v"] = g.to(t.dtype), t
        else:
            out[name] = t
        if name == _CODEBOOK + "embed":
            out[_CODEBOOK + "embed_avg"] = t.clone()  # (K, D)
            out[_CODEBOOK + "cluster_size"] = torch.ones(t.shape[0], dtype=t.dtype)  # (K,)
            out[_CODEBOOK + "inited"] = torch.ones(1, dtype=t.dtype)
    return out


def _official_name(kind: Kind, ours: str) -> str:
    if kind == "gpt":
        return _GPT_PREFIX + ours
    if kind == "sovits" and _WEIGHT_NORM.fullmatch(ours):
        return f"{ours}_g/{ours}_v"
    return ours


# ------------------------------------------------------------------------------ strict load


def load_strict(
    model: nn.Module,
    state: Mapping[str, Tensor],
    kind: Kind,
    path: Path,
    what: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> None:
    """Check every name and shape against ``model``, then copy, cast and freeze it."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{path}: does not fit the {what} model: "
            f"missing {_few([_official_name(kind, n) for n in missing])}, "
            f"unexpected {_few([_official_name(kind, n) for n in unexpected])}"
        )
    for name, want in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointMismatchError(
                f"{path}: tensor {_official_name(kind, name)} has shape {tuple(got.shape)}; "
                f"the {what} model expects {tuple(want.shape)}"
            )
        if got.is_floating_point() != want.is_floating_point():
            raise CheckpointMismatchError(
                f"{path}: tensor {_official_name(kind, name)} is {got.dtype}; expected {want.dtype}"
            )
    model.load_state_dict(state, strict=True)  # copy_ casts fp16 -> the module's fp32
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _few(names: list[str]) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def _check_dtype(dtype: torch.dtype) -> None:
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type (float32, float16, bfloat16), not {dtype}")


def _expect_kind(raw: RawCheckpoint, want: Kind) -> None:
    kind = detect_kind(raw)
    if kind != want:
        names = {"gpt": "a GPT (s1 .ckpt)", "sovits": "a SoVITS (s2 .pth)", "sv": "an sv"}
        raise WrongCheckpointKindError(
            f"{raw.path}: is {names[kind]} file, but {names[want]} file is expected here"
        )


# --------------------------------------------------------------------------- public loaders


def load_gpt(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedGPT:
    """Load an official s1 ``.ckpt`` into :class:`Text2Semantic`, strictly."""
    from .models.t2s import T2SConfig, T2SConfigError, Text2Semantic

    _check_dtype(dtype)
    raw = read_checkpoint(path)
    _expect_kind(raw, "gpt")
    hparams, version = _hparams(raw), gpt_version(raw)
    try:
        config = T2SConfig.from_stored(hparams["model"])
    except (T2SConfigError, KeyError, TypeError, ValueError) as err:
        raise CheckpointFormatError(f"{raw.path}: bad config['model']: {err}") from err
    model = Text2Semantic(config)
    state = official_to_ours("gpt", _weights(raw, "gpt"), raw.path)
    load_strict(model, state, "gpt", raw.path, f"GPT {version}", device=device, dtype=dtype)
    return LoadedGPT(model, config, version, hparams, str(raw.obj.get("info", "")), raw.path)


def load_sovits(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedSoVITS:
    """Load an official s2 ``.pth`` (v1/v2/v2Pro/v2ProPlus) into :class:`SoVITS`, strictly."""
    from .models.vits import SoVITS, VitsConfig, VitsConfigError

    _check_dtype(dtype)
    raw = read_checkpoint(path)
    _expect_kind(raw, "sovits")
    hparams, version = _hparams(raw), sovits_version(raw)
    require_supported_sovits(version, raw.path)
    weights = _weights(raw, "sovits")
    try:
        config = VitsConfig.from_hparams(hparams, version)
    except (VitsConfigError, KeyError, TypeError, ValueError) as err:
        raise CheckpointFormatError(f"{raw.path}: bad s2 hparams: {err}") from err
    if "sv_emb.weight" in weights:
        # hparams do not store the sv width; it is the sv model's (20480 for ERes2NetV2 w24s4).
        config = replace(config, sv_dim=int(weights["sv_emb.weight"].shape[-1]))
    model = SoVITS(config)
    state = official_to_ours("sovits", weights, raw.path)
    load_strict(model, state, "sovits", raw.path, f"SoVITS {version}", device=device, dtype=dtype)
    return LoadedSoVITS(model, config, version, hparams, str(raw.obj.get("info", "")), raw.path)


def load_sv(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedSV:
    """Load the ERes2NetV2 speaker-verification state dict into :class:`SpeakerEncoder`."""
    from .models.sv import SpeakerEncoder, SVConfig

    _check_dtype(dtype)
    raw = read_checkpoint(path)
    _expect_kind(raw, "sv")
    weights = _weights(raw, "sv")
    try:
        config = SVConfig.infer(weights)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointMismatchError(f"{raw.path}: not an ERes2NetV2 layout: {err}") from err
    model = SpeakerEncoder(config)
    state = official_to_ours("sv", weights, raw.path)
    load_strict(model, state, "sv", raw.path, SV_VERSION, device=device, dtype=dtype)
    return LoadedSV(model, config, raw.path)


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Kind, version, size and stored config of a weight file, without building a model."""
    raw = read_checkpoint(path)
    kind = detect_kind(raw)
    weights = _weights(raw, kind)
    if kind == "gpt":
        version, config = gpt_version(raw), _hparams(raw)
    elif kind == "sovits":
        version, config = sovits_version(raw), _hparams(raw)
    else:
        version, config = SV_VERSION, _sv_config(weights)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in weights.values()})
    return CheckpointInfo(
        path=raw.path,
        kind=kind,
        version=version,
        supported=kind != "sovits" or version in SOVITS_VERSIONS,
        n_params=sum(t.numel() for t in weights.values()),
        n_tensors=len(weights),
        stored_dtype="+".join(d for d in dtypes if d not in ("int64", "long")) or "int64",
        config=config,
        info=str(raw.obj.get("info", "")) if kind != "sv" else "",
        tag=raw.tag.decode() if raw.tag else None,
    )


def _sv_config(weights: Mapping[str, Tensor]) -> dict[str, Any]:
    from .models.sv import SVConfig

    try:
        return asdict(SVConfig.infer(weights))
    except (KeyError, TypeError, ValueError) as err:
        return {"error": f"cannot derive the ERes2NetV2 layout: {err}"}


# ---------------------------------------------------------------------------------- writing


def save_official(
    path: str | Path,
    kind: Kind,
    state_dict: Mapping[str, Tensor],
    config: Mapping[str, Any] | None = None,
    *,
    version: str | None = None,
    info: str | None = None,
    tag: bytes | None = None,
    hparams_object: bool = False,
    half: bool = True,
) -> Path:
    """Write ``state_dict`` (our names) as an official-format file upstream can load too.

    ``config``: s1 ``{"model": ..., "data": ...}`` or the s2 hparams. SoVITS v2Pro/ProPlus
    get their version tag unless ``tag`` says otherwise (``b"PK"`` writes a plain zip).
    ``hparams_object`` pickles the s2 config as upstream's ``utils.HParams`` objects.
    """
    weights = {k: _stored(t, half) for k, t in ours_to_official(kind, state_dict).items()}
    if kind == "sv":
        return write_checkpoint(path, weights, tag=tag)
    if config is None or not isinstance(config.get("model"), Mapping):
        raise ValueError(f"a {kind} file needs a config with a 'model' block")
    default_info = "GPT-e0" if kind == "gpt" else "0epoch_0iteration"
    obj = {"weight": weights, "config": _plain(dict(config)), "info": info or default_info}
    if tag is None and kind == "sovits" and version is not None:
        tag = VERSION_TAGS.get(version)
    return write_checkpoint(path, obj, tag=tag, hparams_object=hparams_object)


def write_checkpoint(
    path: str | Path,
    obj: Any,
    *,
    tag: bytes | None = None,
    hparams_object: bool = False,
    hparams_module: str = "utils",
) -> Path:
    """torch.save ``obj`` (official names already) with upstream's framing.

    ``tag`` (e.g. ``b"05"``) overwrites the zip's ``PK``; ``hparams_object`` stores
    ``obj["config"]`` as nested ``<hparams_module>.HParams`` objects, as the training
    WebUI does (``utils`` when run from ``GPT_SoVITS/``).
    """
    if tag is not None and tag != b"PK" and tag not in TAG_VERSIONS:
        raise ValueError(f"unknown version tag {tag!r}; known: {sorted(TAG_VERSIONS)}")
    buffer = io.BytesIO()
    with _hparams_as_upstream(obj, enabled=hparams_object, module=hparams_module) as to_save:
        torch.save(to_save, buffer)
    data = buffer.getvalue()
    if tag is not None and tag != b"PK":
        data = tag + data[2:]
    path = Path(path)
    path.write_bytes(data)
    return path


def _stored(t: Tensor, half: bool) -> Tensor:
    t = t.detach().cpu().contiguous()
    return t.half() if half and t.is_floating_point() else t.clone()


@contextlib.contextmanager
def _hparams_as_upstream(obj: Any, *, enabled: bool, module: str) -> Iterator[Any]:
    """Yield ``obj`` with its config as objects pickled as ``<module>.HParams``, as upstream.

    pickle stores a class by reference and checks that ``sys.modules[module].HParams`` is it,
    so throwaway modules (and their parent packages) are registered for the save only.
    """
    if not enabled:
        yield obj
        return
    if not _MODULE_NAME.fullmatch(module):
        raise ValueError(f"{module!r} is not a module path")
    hparams_cls = type("HParams", (), {"__module__": module})

    def build(values: Mapping[str, Any]) -> Any:
        inst = hparams_cls()
        for key, value in values.items():
            setattr(inst, key, build(value) if isinstance(value, Mapping) else value)
        return inst

    parts = module.split(".")
    names = [".".join(parts[: i + 1]) for i in range(len(parts))]
    with _GLOBALS_LOCK:
        taken = [n for n in names if n in sys.modules]
        if taken:
            raise CheckpointError(f"cannot write HParams objects: module {taken[0]!r} is imported")
        for name in names:
            sys.modules[name] = types.ModuleType(name)
        sys.modules[module].HParams = hparams_cls  # type: ignore[attr-defined]
        try:
            yield {**obj, "config": build(obj["config"])}
        finally:
            for name in names:
                del sys.modules[name]
