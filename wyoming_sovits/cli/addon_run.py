"""``wyoming-sovits addon-run``: start the server from the add-on's ``options.json``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..addon import AddonOptionsError, options_to_argv, read_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "addon-run",
        help="run the server with the Home Assistant add-on's options file",
        description="Map the add-on's options.json onto `serve` flags and start the server.",
    )
    parser.add_argument("--options", type=Path, default=Path("/data/options.json"))
    parser.add_argument(
        "--print", action="store_true", help="print the serve command line instead of running it"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        argv = options_to_argv(read_options(args.options))
    except AddonOptionsError as err:
        print(f"wyoming-sovits: {err}", file=sys.stderr)
        return 2
    if args.print:
        print(" ".join(["wyoming-sovits", "serve", *argv]))
        return 0
    from ..__main__ import main

    return main(["serve", *argv])
