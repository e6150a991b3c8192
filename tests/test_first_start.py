"""First start of a packaged server (Docker image, add-on): weights first, then the example voice.

A fresh install has no weights and an empty voices folder. ``serve --download`` must fetch the
weights before it looks at the voices, and ``--example-voice`` must serve the bundled example
voice (package data) instead of exiting, with a log line saying how to enroll one's own.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_backend import FakeBackend, write_voice

from wyoming_sovits import download
from wyoming_sovits.__main__ import build_parser
from wyoming_sovits.cli import serve as serve_cli
from wyoming_sovits.settings import ServerSettings
from wyoming_sovits.voices import load_voice

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = serve_cli.EXAMPLE_VOICES_DIR / serve_cli.EXAMPLE_VOICE


class _Recorder:
    """Stands in for the download, the model load and the listening server, in call order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, voices_dir: Path) -> None:
        self.calls: list[str] = []
        self.voices_dir = voices_dir
        self.served: list[str] = []
        self.settings: ServerSettings | None = None
        monkeypatch.setattr(download, "download_weights", self.download)
        monkeypatch.setattr(serve_cli, "load_backend", self.load_backend)
        monkeypatch.setattr(serve_cli, "serve", self.serve)

    def download(self, models_dir: Path, version: str, **_: Any) -> None:
        assert not list(self.voices_dir.glob("*/voice.yaml")), "voices looked at before download"
        self.calls.append(f"download {version} -> {models_dir}")

    def load_backend(self, spec: str | None, settings: ServerSettings, **_: Any) -> FakeBackend:
        self.calls.append("load models")
        return FakeBackend()

    async def serve(self, settings: ServerSettings, engine: Any, registry: Any) -> None:
        self.calls.append("listen")
        self.settings = settings
        self.served = registry.names()


def _run_serve(*flags: str) -> int:
    args: argparse.Namespace = build_parser().parse_args(["serve", *flags])
    return int(args.func(args))


def test_first_start_downloads_weights_then_serves_the_example_voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    voices = tmp_path / "data" / "voices"  # does not exist yet, as in a fresh /data volume
    recorder = _Recorder(monkeypatch, voices)
    caplog.set_level(logging.INFO)
    code = _run_serve(
        "--data-dir", str(tmp_path / "data"), "--voices-dir", str(voices),
        "--download", "--example-voice",
    )  # fmt: skip
    assert code == 0, caplog.text
    assert recorder.calls == [
        f"download v2ProPlus -> {tmp_path / 'data' / 'models'}",
        "load models",
        "listen",
    ]
    assert recorder.served == ["austen"]
    assert recorder.settings is not None and recorder.settings.default_voice == "austen"
    seeded = voices / "austen"
    assert (seeded / "voice.yaml").read_bytes() == (EXAMPLE / "voice.yaml").read_bytes()
    assert (seeded / "LICENSE.md").is_file()  # the licence travels with the copy
    assert load_voice(seeded).display_name == "Austen (LibriVox)"
    # The log tells the user what happened and how to enroll their own voice.
    warning = next(r.getMessage() for r in caplog.records if "example voice" in r.getMessage())
    assert "wyoming-sovits voice add" in warning and str(voices) in warning


def test_download_comes_before_the_voices_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without --example-voice an empty folder is still an error, but after the download."""
    recorder = _Recorder(monkeypatch, tmp_path / "voices")
    code = _run_serve(
        "--data-dir", str(tmp_path / "data"), "--voices-dir", str(tmp_path / "voices"),
        "--download",
    )  # fmt: skip
    assert code == 1
    assert recorder.calls == [f"download v2ProPlus -> {tmp_path / 'data' / 'models'}"]
    assert "No usable voice" in caplog.text and "--example-voice" in caplog.text
    assert not (tmp_path / "voices" / "austen").exists()


def test_broken_voices_are_not_hidden_behind_the_example(tmp_path: Path) -> None:
    broken = tmp_path / "voices" / "mom"
    broken.mkdir(parents=True)
    (broken / "voice.yaml").write_text("languages: [en_US]\n")  # no reference
    settings = ServerSettings(voices_dir=tmp_path / "voices")
    with pytest.raises(serve_cli.ServeError, match=r"No usable voice.*mom.*reference"):
        serve_cli._load_voices(settings, example_voice=True)
    assert not (tmp_path / "voices" / "austen").exists()


def test_an_enrolled_voice_is_the_default_over_the_example(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "austen")  # seeded on an earlier start
    write_voice(tmp_path, "mom")
    settings = ServerSettings(voices_dir=tmp_path)
    registry, default = serve_cli._load_voices(settings, example_voice=True)
    assert (registry.names(), default) == (["austen", "mom"], "mom")
    # Plain `serve` keeps its rule (the first voice by name), and --default-voice wins.
    assert serve_cli._load_voices(settings)[1] == "austen"
    named = ServerSettings(voices_dir=tmp_path, default_voice="austen")
    assert serve_cli._load_voices(named, example_voice=True)[1] == "austen"


def test_unwritable_voices_folder_serves_the_example_from_the_package(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = ServerSettings(voices_dir=blocker / "voices")
    registry, default = serve_cli._load_voices(settings, example_voice=True)
    assert (registry.names(), default) == (["austen"], "austen")
    assert registry.voices_dir == serve_cli.EXAMPLE_VOICES_DIR
    assert "Cannot copy the example voice" in caplog.text


def test_example_voice_is_package_data_with_its_licence() -> None:
    package = ROOT / "wyoming_sovits"
    assert EXAMPLE.resolve().is_relative_to(package)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'wyoming_sovits = \[[^\]]*"data/\*\*/\*"', pyproject), "not in the wheel"
    files = sorted(p.name for p in EXAMPLE.iterdir())
    assert files == ["LICENSE.md", "reference.wav", "voice.yaml"]
    assert sum(p.stat().st_size for p in EXAMPLE.iterdir()) < 1_000_000  # small enough to ship
    licence = (EXAMPLE / "LICENSE.md").read_text()
    assert "public domain" in licence and "BSD-2-Clause" in licence
    reference = load_voice(EXAMPLE).reference
    assert reference.audio.stat().st_size > 100_000 and reference.text
    # The checkout's voices/austen (README quick start, tests) is the same voice.
    assert (ROOT / "voices" / "austen" / "voice.yaml").samefile(EXAMPLE / "voice.yaml")


def _dockerfile_entrypoint() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert match, "Dockerfile has no exec-form ENTRYPOINT"
    entry: list[str] = json.loads(match.group(1))
    return entry


def test_docker_image_first_start() -> None:
    entry = _dockerfile_entrypoint()
    assert entry[:2] == ["wyoming-sovits", "serve"]
    args = build_parser().parse_args(entry[1:])
    assert args.download and args.example_voice
    assert args.voices_dir == Path("/data/voices") and args.data_dir == [Path("/data")]
    # The image installs the package (the example voice is package data), not the checkout.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY wyoming_sovits ./wyoming_sovits" in dockerfile
    assert "--test" not in dockerfile


def test_docker_image_keeps_a_c_compiler_and_the_compile_caches() -> None:
    """Triton (the default GPT step on CUDA) and TorchInductor build their launchers with a C
    compiler at start: purging the build tools must not autoremove gcc, which stays only if
    installed by name. Their caches live in the volume, so later starts skip compiling."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"apt-get install ([^&]*)", text)
    purges = re.findall(r"apt-get purge ([^&]*)", text)
    assert any({"gcc", "libc6-dev"} <= set(line.split()) for line in installs)
    assert not any({"gcc", "libc6-dev"} & set(line.split()) for line in purges)
    env = re.search(r"^ENV (.*)$", text, re.M)
    assert env is not None
    for name in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert re.search(rf"\b{name}=/data/", env.group(1)), name


def test_compose_example_starts_without_enrolled_voices() -> None:
    """A --default-voice naming a voice that is not enrolled yet would stop the first start."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"]["wyoming-sovits"].get("environment") or {}
    assert "--default-voice" not in str(environment)
