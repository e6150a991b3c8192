"""Command line: ``wyoming-sovits <command> ...`` (``serve`` is the default command).

Each command lives in ``wyoming_sovits/cli/<name>.py`` and exposes
``add_parser(subparsers)``, which registers its arguments and sets ``func``
(``func(args) -> int`` is the exit status).  Heavy imports (torch, models) happen
inside the command functions, so ``--help`` and ``health`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
from collections.abc import Sequence

from . import __version__

# command name -> module in wyoming_sovits/cli/
_COMMANDS = {
    "serve": "serve",
    "models": "models",
    "voice": "voice",
    "speak": "speak",
    "health": "health",
    "doctor": "doctor",
    "addon-run": "addon_run",
}
_DEFAULT_COMMAND = "serve"
ENV_ARGS = "WYOMING_SOVITS_ARGS"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wyoming-sovits",
        description="Wyoming TTS server with cloned household voices (GPT-SoVITS).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS.values():
        qualified = f"wyoming_sovits.cli.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as err:
            if err.name != qualified:
                raise
            continue  # command not built yet
        module.add_parser(subparsers)
    return parser


def _with_default_command(argv: list[str]) -> list[str]:
    """``python -m wyoming_sovits --uri ...`` means ``serve --uri ...``."""
    if not argv or (argv[0] not in _COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        return [_DEFAULT_COMMAND, *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if argv is None and os.environ.get(ENV_ARGS):
        # Containers pass extra flags through the environment.
        args_list += shlex.split(os.environ[ENV_ARGS])
    parser = build_parser()
    args = parser.parse_args(_with_default_command(args_list))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        format=getattr(args, "log_format", None) or "%(levelname)s:%(name)s:%(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
