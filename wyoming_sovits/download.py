"""Fetch the official GPT-SoVITS weight files, verified, into the models folder.

Files come from the Hugging Face repository ``lj1995/GPT-SoVITS`` and keep upstream's
relative paths, so a folder copied from an upstream install works as is::

    <models_dir>/s1v3.ckpt
    <models_dir>/v2Pro/s2Gv2ProPlus.pth
    <models_dir>/sv/pretrained_eres2netv2w24s4ep4.ckpt
    <models_dir>/chinese-hubert-base/{config.json,preprocessor_config.json,pytorch_model.bin}
    <models_dir>/chinese-roberta-wwm-ext-large/{config.json,tokenizer.json,pytorch_model.bin}

Every download is checked against the SHA-256 the hub publishes for the file (the LFS
etag) and its size; a mismatch deletes the file. What was verified is recorded in
``<models_dir>/weights.lock.json`` (path, size, sha256, commit), which ``models list``
reads back. Nothing here runs on the request path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

HF_REPO = "lj1995/GPT-SoVITS"
LOCK_FILE = "weights.lock.json"
DEFAULT_VERSION = "v2ProPlus"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightFile:
    """One file of a weight set; ``path`` is relative to the repo and to the models folder."""

    path: str
    role: str  # gpt | sovits | sv | hubert | bert


_HUBERT = tuple(
    WeightFile(f"chinese-hubert-base/{name}", "hubert")
    for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin")
)
_BERT = tuple(
    WeightFile(f"chinese-roberta-wwm-ext-large/{name}", "bert")
    for name in ("config.json", "tokenizer.json", "pytorch_model.bin")
)
_SV = WeightFile("sv/pretrained_eres2netv2w24s4ep4.ckpt", "sv")
_S1_V3 = WeightFile("s1v3.ckpt", "gpt")

WEIGHT_SETS: dict[str, tuple[WeightFile, ...]] = {
    "v2ProPlus": (_S1_V3, WeightFile("v2Pro/s2Gv2ProPlus.pth", "sovits"), _SV, *_HUBERT, *_BERT),
    "v2Pro": (_S1_V3, WeightFile("v2Pro/s2Gv2Pro.pth", "sovits"), _SV, *_HUBERT, *_BERT),
    "v2": (
        WeightFile("gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt", "gpt"),
        WeightFile("gsv-v2final-pretrained/s2G2333k.pth", "sovits"),
        *_HUBERT,
        *_BERT,
    ),
}


class DownloadError(RuntimeError):
    """A weight file could not be fetched (offline, missing on the hub, disk full)."""


class ChecksumError(DownloadError):
    """A downloaded file does not match the checksum or size the hub published for it."""


def weight_set(version: str) -> tuple[WeightFile, ...]:
    try:
        return WEIGHT_SETS[version]
    except KeyError:
        raise DownloadError(
            f"unknown model version {version!r}; choose one of {', '.join(WEIGHT_SETS)}"
        ) from None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_lock(models_dir: Path) -> dict[str, dict[str, object]]:
    lock = models_dir / LOCK_FILE
    if not lock.is_file():
        return {}
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        _LOGGER.warning("Ignoring unreadable %s: %s", lock, err)
        return {}
    return data if isinstance(data, dict) else {}


def _write_lock(models_dir: Path, lock: dict[str, dict[str, object]]) -> None:
    tmp = models_dir / (LOCK_FILE + ".tmp")
    tmp.write_text(json.dumps(lock, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(models_dir / LOCK_FILE)


def missing_files(models_dir: Path, version: str) -> list[WeightFile]:
    """Files of the set that are not in the models folder (presence only; fast)."""
    return [f for f in weight_set(version) if not (models_dir / f.path).is_file()]


def verify_file(models_dir: Path, file: WeightFile) -> str | None:
    """Return a problem description, or None when the file matches its lock entry."""
    target = models_dir / file.path
    if not target.is_file():
        return "missing"
    entry = read_lock(models_dir).get(file.path)
    if entry is None:
        return "present, not verified (placed by hand)"
    if target.stat().st_size != entry.get("size"):
        return f"size {target.stat().st_size} differs from the verified {entry.get('size')}"
    return None


def offline_help(models_dir: Path, version: str, *, reached: bool = False) -> str:
    """What to do next: run again (a broken transfer resumes), or place the files by hand."""
    paths = "\n".join(f"  {models_dir / f.path}" for f in weight_set(version))
    first = (
        "The download broke off; run the same command again to resume it, or download"
        if reached
        else "Could not reach the model hub. Download"
    )
    return (
        f"{first} the files of {HF_REPO} by hand "
        f"(https://huggingface.co/{HF_REPO}) and place them here:\n{paths}"
    )


def download_weights(
    models_dir: Path,
    version: str = DEFAULT_VERSION,
    *,
    endpoint: str | None = None,
    revision: str = "main",
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download the weight set for ``version`` (skipping verified files); return the paths."""
    from huggingface_hub.utils import HfHubHTTPError

    # Read at call time (huggingface_hub reads HF_ENDPOINT only once, at import): mirrors work.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    models_dir.mkdir(parents=True, exist_ok=True)
    lock = read_lock(models_dir)
    todo = [f for f in weight_set(version) if verify_file(models_dir, f) is not None]
    if todo:
        _check_reachable(endpoint, models_dir, version)
    paths = []
    for file in weight_set(version):
        target = models_dir / file.path
        if target.is_file() and verify_file(models_dir, file) is None:
            paths.append(target)
            continue
        if progress:
            progress(f"downloading {file.path}")
        try:
            entry = _fetch_one(models_dir, file, endpoint=endpoint, revision=revision)
        except (HfHubHTTPError, OSError) as err:
            if isinstance(err, ChecksumError):
                raise
            hint = offline_help(models_dir, version, reached=True)
            raise DownloadError(f"{file.path}: {err}\n{hint}") from err
        lock[file.path] = entry
        _write_lock(models_dir, lock)
        paths.append(target)
    return paths


def _check_reachable(endpoint: str | None, models_dir: Path, version: str) -> None:
    """Fail fast when offline: huggingface_hub retries refused connections with back-off."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(endpoint or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=5).close()
    except OSError as err:
        raise DownloadError(f"{url.geturl()}: {err}\n{offline_help(models_dir, version)}") from err


def _fetch_one(
    models_dir: Path, file: WeightFile, *, endpoint: str | None, revision: str
) -> dict[str, object]:
    """Download one file through huggingface_hub (resumable, progress bar) and verify it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    meta = get_hf_file_metadata(
        hf_hub_url(HF_REPO, file.path, revision=revision, endpoint=endpoint)
    )
    commit = meta.commit_hash or revision
    local = Path(
        hf_hub_download(
            HF_REPO, file.path, revision=commit, local_dir=models_dir, endpoint=endpoint
        )
    )
    digest = sha256_of(local)
    size = local.stat().st_size
    # LFS files carry their SHA-256 as etag; small git files carry a git hash (size check only).
    expected = (meta.etag or "").lower()
    if (_SHA256.match(expected) and digest != expected) or (
        meta.size is not None and size != meta.size
    ):
        local.unlink(missing_ok=True)
        raise ChecksumError(
            f"{file.path}: downloaded file does not match the hub's checksum "
            f"(sha256 {digest}, size {size}; expected {expected or '?'}, size {meta.size}); "
            "it was deleted, try again"
        )
    return {"sha256": digest, "size": size, "commit": commit, "role": file.role}
