"""The ``wyoming-sovits`` commands in a Markdown file's ``sh`` blocks, for the docs tests."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from wyoming_sovits.__main__ import build_parser


def shell_lines(markdown: str) -> list[str]:
    """Non-empty lines of the ``sh`` blocks (indented ones too), continuations joined."""
    blocks = re.findall(r"^[ \t]*```sh\n(.*?)^[ \t]*```", markdown, re.S | re.M)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()]


def cli_invocations(markdown: str) -> list[list[str]]:
    """The arguments of every ``wyoming-sovits COMMAND ...`` (after ``&&``, in ``docker exec``)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for line in shell_lines(markdown):
        if line.startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part)
            starts = [
                i + 1
                for i, word in enumerate(words[:-1])
                if word.endswith("wyoming-sovits")
                and (words[i + 1] in sub.choices or (i == 0 and words[i + 1].startswith("-")))
            ]
            if starts:
                found.append(words[starts[0] :])
    return found


def subcommand(*names: str) -> argparse.ArgumentParser:
    """The parser of ``wyoming-sovits NAME...``, e.g. ``subcommand("voice", "add")``."""
    parser = build_parser()
    for name in names:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def audio_formats() -> list[str]:
    """What ``voice add --audio`` says it reads ("recording: wav, flac, ogg, mp3")."""
    audio = next(a for a in subcommand("voice", "add")._actions if "--audio" in a.option_strings)
    assert audio.help and ":" in audio.help
    return [word.strip() for word in audio.help.split(":", 1)[1].split(",")]


def check_enrollment_commands(markdown: str) -> list[str]:
    """Problems with the ``voice add`` commands of a page that enrolls a long recording."""
    formats = audio_formats()
    problems = []
    for argv in cli_invocations(markdown):
        if argv[:2] != ["voice", "add"]:
            continue
        args = build_parser().parse_args(argv)
        suffix = Path(args.audio).suffix.lower().lstrip(".")
        if suffix not in formats:
            problems.append(f"{' '.join(argv)}: --audio .{suffix} is not one of {formats}")
        # A minute of speech is too long for a reference: --text transcribes a chosen clip.
        if args.text is not None and args.clip is None:
            problems.append(f"{' '.join(argv)}: --text without --clip for a long recording")
    return problems
