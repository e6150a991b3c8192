"""The README cannot drift: its commands parse, and CI runs exactly its test command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from wyoming_sovits.__main__ import build_parser, main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _cli_invocations() -> list[list[str]]:
    """Every ``wyoming-sovits ...`` command in the README's shell blocks."""
    found = []
    for line in _code_lines():
        if line.startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part)
            if words and words[0].endswith("wyoming-sovits"):
                found.append(words[1:])
    return found


def test_readme_has_the_two_quick_start_commands() -> None:
    lines = _code_lines()
    assert (
        "script/setup && .venv/bin/wyoming-sovits serve --download --voices-dir voices --data-dir data"
        in lines
    )
    assert "script/setup --test && .venv/bin/python -m pytest -q" in lines


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "script/setup --test && .venv/bin/python -m pytest -q" in ci.splitlines()


@pytest.mark.parametrize("argv", _cli_invocations(), ids=lambda a: " ".join(a)[:40])
def test_readme_commands_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_readme_mentions_every_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        if name == "addon-run":  # internal to the add-on image
            continue
        assert f"wyoming-sovits {name}" in README, name


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from wyoming_sovits import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == __version__


def test_doctor_reports_missing_weights_and_voices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["doctor", "--data-dir", str(tmp_path), "--voices-dir", str(tmp_path / "v"), "--port", "9"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "wyoming-sovits models download" in out
    assert "voices in" in out and "none" in out
    assert "port 9:" in out


def test_doctor_lists_example_voice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["doctor", "--data-dir", str(tmp_path), "--voices-dir", str(ROOT / "voices")])
    assert "austen" in capsys.readouterr().out
