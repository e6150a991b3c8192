"""``wyoming-sovits models inspect FILE``: what an official weight file holds, read safely."""

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
    commands.metavar = "{" + ",".join(commands.choices) + "}"  # usage errors list the choices


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
