"""``wyoming-sovits models inspect|download|list``: the official GPT-SoVITS weight files.

``inspect`` reads a file without executing its pickle; ``download`` fetches a pinned set
with checksums into ``<data-dir>/models``; ``list`` shows what is installed and usable.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

_KIND_NAMES = {
    "gpt": "gpt (GPT-SoVITS s1, text to semantic tokens)",
    "sovits": "sovits (GPT-SoVITS s2, semantic tokens to audio)",
    "sv": "sv (ERes2NetV2 speaker verification, v2Pro/v2ProPlus)",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="inspect GPT-SoVITS weight files",
        description="Work with the official GPT-SoVITS weight files (.ckpt, .pth).",
    )
    commands = parser.add_subparsers(dest="models_command", required=True)
    inspect = commands.add_parser(
        "inspect",
        help="print kind, version, size and stored config of a weight file",
        description="Read a weight file without executing its pickle and describe it.",
    )
    inspect.add_argument("file", type=Path, metavar="FILE", help="a .ckpt or .pth file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead")
    inspect.set_defaults(func=run_inspect)
    download = commands.add_parser(
        "download",
        help="download the official weights (GPT, SoVITS, sv, HuBERT, BERT) with checksums",
        description="Fetch the weights of one model version into <data-dir>/models; "
        "verified files are skipped, interrupted downloads resume.",
    )
    _add_location_args(download)
    download.set_defaults(func=run_download)
    listing = commands.add_parser("list", help="show which weight sets are installed and usable")
    _add_location_args(listing)
    listing.set_defaults(func=run_list)
    commands.metavar = "{" + ",".join(commands.choices) + "}"  # usage errors list the choices


def _add_location_args(parser: argparse.ArgumentParser) -> None:
    from ..download import DEFAULT_VERSION, WEIGHT_SETS

    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="weights go to DATA_DIR/models"
    )
    parser.add_argument("--version", choices=list(WEIGHT_SETS), default=DEFAULT_VERSION)


def run_download(args: argparse.Namespace) -> int:
    """Exit 0 when every file of the set is present and verified, 1 with the reason otherwise."""
    from ..download import DownloadError, download_weights

    models_dir = args.data_dir / "models"
    try:
        paths = download_weights(models_dir, args.version, progress=print)
    except DownloadError as err:
        print(f"wyoming-sovits models download: {err}", file=sys.stderr)
        return 1
    print(f"{args.version}: {len(paths)} files ready in {models_dir}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print each weight set with the state of its files; exit 0 if the chosen set is usable."""
    from ..download import WEIGHT_SETS, verify_file

    models_dir = args.data_dir / "models"
    print(f"models folder: {models_dir}")
    usable = False
    for version, files in WEIGHT_SETS.items():
        problems = {f.path: verify_file(models_dir, f) for f in files}
        missing = [p for p, why in problems.items() if why == "missing"]
        state = "installed" if not missing else f"missing {len(missing)} of {len(files)} files"
        print(f"{version:10s} {state}")
        for path, why in problems.items():
            if why and why != "missing":
                print(f"    {path}: {why}")
        usable = usable or (version == args.version and not missing)
    return 0 if usable else 1


def run_inspect(args: argparse.Namespace) -> int:
    """Exit 0 with a report, or 1 with a one-line reason for a bad or refused file."""
    from ..checkpoints import CheckpointError, inspect_checkpoint

    try:
        info = inspect_checkpoint(args.file)
    except CheckpointError as err:
        print(f"wyoming-sovits models inspect: {err}", file=sys.stderr)
        return 1
    if args.json:
        report = {**asdict(info), "path": str(info.path)}
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"file:         {info.path}")
    print(f"kind:         {_KIND_NAMES[info.kind]}")
    version = info.version if info.supported else f"{info.version} (not supported by this server)"
    print(f"version:      {version}" + (f"  [header tag {info.tag}]" if info.tag else ""))
    print(f"parameters:   {info.n_params:,} in {info.n_tensors} tensors")
    print(f"stored dtype: {info.stored_dtype}")
    if info.info:
        print(f"info:         {info.info}")
    print("config:")
    for line in _render(info.config, indent=1):
        print(line)
    return 0


def _render(value: Any, indent: int) -> list[str]:
    """Nested config as indented ``key: value`` lines; lists of scalars stay on one line."""
    pad = "  " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            lines.extend(_render(item, indent + 1))
        else:
            lines.append(f"{pad}{key}: {json.dumps(item, default=str)}")
    return lines
