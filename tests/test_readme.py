"""The README cannot drift: its commands parse, and CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from doc_commands import check_enrollment_commands, cli_invocations, shell_lines, subcommand

from wyoming_sovits.__main__ import build_parser, main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_TEST_COMMAND = "script/setup --test && .venv/bin/python -m pytest -q"


def test_readme_has_the_two_quick_start_commands() -> None:
    lines = shell_lines(README)
    assert (
        "script/setup && .venv/bin/wyoming-sovits serve --download --voices-dir voices --data-dir data"
        in lines
    )
    assert README_TEST_COMMAND in lines


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert README_TEST_COMMAND in ci.splitlines()


def test_ci_runs_the_docker_install_path_and_the_installed_cli() -> None:
    """After the README command: a non-editable `script/setup` into a fresh venv, then smoke."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    readme_at = lines.index(README_TEST_COMMAND)
    fresh = lines.index('fresh_venv="$fresh_dir/venv"')
    # the second venv is not left on disk
    assert lines.index("trap 'rm -rf \"$fresh_dir\"' EXIT") < fresh
    setup = lines.index('VENV="$fresh_venv" script/setup')  # no --test: `pip install .`
    smoke = lines.index('script/smoke "$fresh_venv"')
    assert readme_at < fresh < setup < smoke
    # The Dockerfile installs the same way.
    assert re.search(r"\bVENV=\S+ script/setup(?!\s+--test)", (ROOT / "Dockerfile").read_text())
    script = ROOT / "script" / "smoke"
    assert script.stat().st_mode & 0o111
    body = script.read_text()
    for step in ('"$cli" --version', '"$cli" serve', '"$cli" health', '"$cli" doctor'):
        assert step in body, step
    assert "--example-voice" in body and "--download" in body  # the image's first start


@pytest.mark.parametrize("argv", cli_invocations(README), ids=lambda a: " ".join(a)[:40])
def test_readme_commands_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_readme_lists_every_serve_flag() -> None:
    """Every flag of `serve --help` (and the hidden developer flag) is in the CLI table."""
    row = next(line for line in README.splitlines() if line.startswith("| `wyoming-sovits serve`"))
    flags = [
        flag
        for action in subcommand("serve")._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    ]
    assert "--backend" in flags and "--no-warm-up" in flags
    missing = [flag for flag in flags if not re.search(rf"`{re.escape(flag)}[` ]", row)]
    assert missing == []


def test_readme_enrollment_matches_voice_add() -> None:
    assert check_enrollment_commands(README) == []


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
    assert "triton " in out  # its version (or "not installed"): the default GPT kernels


def test_doctor_lists_example_voice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["doctor", "--data-dir", str(tmp_path), "--voices-dir", str(ROOT / "voices")])
    assert "austen" in capsys.readouterr().out
