"""The Home Assistant add-on: files valid for the add-on linter, options mapped onto real flags."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from doc_commands import check_enrollment_commands, cli_invocations
from jsonschema import Draft7Validator

from wyoming_sovits import __version__
from wyoming_sovits.__main__ import build_parser
from wyoming_sovits.addon import AddonOptionsError, options_to_argv, read_options

ROOT = Path(__file__).parent.parent
ADDON = ROOT / "addon"
SCHEMAS = Path(__file__).parent / "data" / "ha-addon-schema"


def _load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((ADDON / name).read_text())


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


@pytest.mark.parametrize(
    ("file", "schema"), [("config.yaml", "config.schema.json"), ("build.yaml", "build.schema.json")]
)
def test_addon_files_validate_against_linter_schema(file: str, schema: str) -> None:
    errors = [e.message for e in Draft7Validator(_schema(schema)).iter_errors(_load_yaml(file))]
    assert errors == []


@pytest.mark.parametrize(
    ("file", "schema"), [("config.yaml", "config.schema.json"), ("build.yaml", "build.schema.json")]
)
def test_no_key_is_set_to_its_default(file: str, schema: str) -> None:
    """The linter flags keys that repeat the schema default ("should be removed")."""
    props = _schema(schema)["properties"]
    data = _load_yaml(file)
    redundant = [
        k for k, v in data.items() if "default" in props.get(k, {}) and props[k]["default"] == v
    ]
    # `init: false` differs from the default (true) and must stay.
    assert redundant == []


def test_config_matches_what_home_assistant_needs() -> None:
    config = _load_yaml("config.yaml")
    assert config["version"] == __version__
    assert config["discovery"] == ["wyoming"]
    assert config["init"] is False
    assert config["ports"] == {"10200/tcp": None}
    major, minor = (int(x) for x in str(config["homeassistant"]).split(".")[:2])
    assert (major, minor) >= (2025, 8)
    assert config["backup_exclude"]
    assert any(str(m).startswith("share") for m in config["map"])
    assert set(_load_yaml("build.yaml")["build_from"]) == set(config["arch"])


def test_options_schema_translations_docs_list_the_same_options() -> None:
    config = _load_yaml("config.yaml")
    options, schema = set(config["options"]), set(config["schema"])
    translations = set(_load_yaml("translations/en.yaml")["configuration"])
    documented = set(re.findall(r"^### Option: `([a-z_]+)`", (ADDON / "DOCS.md").read_text(), re.M))
    assert options == schema == translations == documented


def test_every_option_maps_to_a_flag_that_serve_accepts() -> None:
    options = _load_yaml("config.yaml")["options"]
    options = {**options, "default_voice": "mom", "debug_logging": True, "streaming": False}
    argv = options_to_argv(options)
    args = build_parser().parse_args(["serve", *argv])
    assert args.uri == "tcp://0.0.0.0:10200"
    assert args.default_voice == "mom"
    assert "--no-streaming" in argv and "--debug" in argv


def test_defaults_map_to_expected_argv() -> None:
    argv = options_to_argv(_load_yaml("config.yaml")["options"])
    assert argv[:5] == ["--uri", "tcp://0.0.0.0:10200", "--data-dir", "/data", "--zeroconf"]
    assert "--download" in argv and "--example-voice" in argv  # the first start
    assert "--default-voice" not in argv  # empty string: server default
    assert "--no-streaming" not in argv and "--debug" not in argv
    assert argv[argv.index("--samples-per-chunk") + 1] == "1024"


def test_first_start_downloads_weights_and_serves_the_example_voice() -> None:
    """DOCS.md promises both; without them the first start exits and the app is halted."""
    for options in ({}, _load_yaml("config.yaml")["options"]):
        args = build_parser().parse_args(["serve", *options_to_argv(options)])
        assert args.download and args.example_voice
        assert args.data_dir == [Path("/data")]
    docs = (ADDON / "DOCS.md").read_text()
    install = docs[docs.index("## Installation") : docs.index("## Adding a household voice")]
    assert "downloads the model weights" in install and "example voice" in install


def test_docs_enrollment_follows_voice_add() -> None:
    """Supported audio formats; a one-minute recording: --preview first, then --clip + --text."""
    docs = (ADDON / "DOCS.md").read_text()
    commands = [argv for argv in cli_invocations(docs) if argv[:2] == ["voice", "add"]]
    assert len(commands) >= 2
    assert "--preview" in commands[0] and "--clip" in commands[1]
    voices_dir = _load_yaml("config.yaml")["options"]["voices_dir"]
    assert all(voices_dir in argv for argv in commands)  # the default folder
    for argv in cli_invocations(docs):
        assert callable(build_parser().parse_args(argv).func)
    assert check_enrollment_commands(docs) == []


def test_unknown_option_is_refused() -> None:
    with pytest.raises(AddonOptionsError, match="unknown add-on option"):
        options_to_argv({"voice_speed": 2})


def test_read_options_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AddonOptionsError, match="cannot read"):
        read_options(tmp_path / "missing.json")
    bad = tmp_path / "options.json"
    bad.write_text("{not json")
    with pytest.raises(AddonOptionsError, match="not valid JSON"):
        read_options(bad)


def test_addon_run_prints_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wyoming_sovits.__main__ import main

    opts = tmp_path / "options.json"
    opts.write_text(json.dumps({"device": "cpu", "streaming": True}))
    assert main(["addon-run", "--options", str(opts), "--print"]) == 0
    assert capsys.readouterr().out.startswith("wyoming-sovits serve --uri tcp://0.0.0.0:10200")


def test_s6_scripts_are_executable_and_exec_the_server() -> None:
    s6 = ADDON / "rootfs/etc/s6-overlay/s6-rc.d"
    run = s6 / "wyoming-sovits/run"
    assert run.stat().st_mode & 0o111
    assert "exec wyoming-sovits addon-run" in run.read_text()
    assert (s6 / "wyoming-sovits/type").read_text().strip() == "longrun"
    assert (s6 / "discovery/type").read_text().strip() == "oneshot"
    assert "bashio::discovery" in (s6 / "discovery/run").read_text()
    assert (s6 / "user/contents.d/wyoming-sovits").exists()
    assert (s6 / "user/contents.d/discovery").exists()
