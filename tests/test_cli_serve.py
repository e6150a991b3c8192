"""The ``serve`` and ``health`` commands as subprocesses: stdio://, wyoming-bench, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_backend import expected_samples, write_voice
from test_enroll import TEXT_0870, librivox
from tiny_backend import MAX_TOKENS
from tiny_frontends import make_tiny_models_dir
from wyoming.audio import AudioChunk
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_sovits.__main__ import build_parser
from wyoming_sovits.cli.serve import settings_from_args

REPO = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "wyoming_sovits", "serve", "--backend", "tests/fake_backend.py:make"]


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    write_voice(tmp_path / "voices", "alice", display_name="Alice")
    return tmp_path / "voices"


def test_flags_to_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["serve", "--data-dir", "/a", "--data-dir", "/b", "--zeroconf", "--no-streaming",
         "--samples-per-chunk", "2048", "--max-text-chars", "0", "--device", "cpu",
         "--dtype", "float16", "--phrase-cache-size", "0", "--default-voice", "alice",
         "--sovits-compile"]
    )  # fmt: skip
    settings = settings_from_args(args)
    assert settings.sovits_compile
    assert not settings_from_args(build_parser().parse_args(["serve"])).sovits_compile
    assert settings.uri == "tcp://0.0.0.0:10200"
    assert settings.data_dirs == (Path("/a"), Path("/b"))
    assert settings.zeroconf and settings.zeroconf_name is None and not settings.streaming
    assert (settings.samples_per_chunk, settings.max_text_chars) == (2048, 0)
    assert (settings.device, settings.dtype, settings.phrase_cache_size) == ("cpu", "float16", 0)
    named = settings_from_args(build_parser().parse_args(["serve", "--zeroconf", "kitchen"]))
    assert named.zeroconf and named.zeroconf_name == "kitchen"


def test_serve_without_voices_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SERVE, "--uri", "stdio://", "--voices-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "No usable voice" in result.stderr and "voices/README.md" in result.stderr


async def test_stdio_subprocess(voices_dir: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *SERVE, "--uri", "stdio://", "--voices-dir", str(voices_dir),
        cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:

        async def read() -> Event:
            event = await asyncio.wait_for(async_read_event(proc.stdout), timeout=30)  # type: ignore[arg-type]
            assert event is not None
            return event

        await async_write_event(Describe().event(), proc.stdin)
        info = Info.from_event(await read())
        assert info.tts[0].installed and info.tts[0].voices[0].name == "alice"

        text = "Hello from a subprocess."
        synthesize = Synthesize(text=text, voice=SynthesizeVoice(name="alice"))
        await async_write_event(synthesize.event(), proc.stdin)
        events = [await read()]
        while events[-1].type != "audio-stop":
            events.append(await read())
        assert events[0].type == "audio-start"
        samples = sum(AudioChunk.from_event(e).samples for e in events if e.type == "audio-chunk")
        assert samples == expected_samples(text)

        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"server did not listen on {port}")


def test_bench_health_and_sigterm(voices_dir: Path) -> None:
    bench = shutil.which("wyoming-bench", path=str(Path(sys.executable).parent))
    assert bench is not None, "wyoming-bench is a test dependency"
    port = _free_port()
    uri = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*SERVE, "--uri", uri, "--voices-dir", str(voices_dir)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, proc)
        health = [sys.executable, "-m", "wyoming_sovits", "health", "--uri", uri]
        result = subprocess.run(health, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout
        assert result.stdout.startswith("OK: GPT-SoVITS")

        env = {**os.environ, "NO_COLOR": "1"}
        result = subprocess.run(
            [bench, "tts", f"127.0.0.1:{port}", "--mode", "both", "--rounds", "2",
             "--no-unique", "--timeout", "20", "--texts", "Hello there. How are you?"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # graceful stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    health = [sys.executable, "-m", "wyoming_sovits", "health", "--uri", uri, "--timeout", "1"]
    result = subprocess.run(health, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout.startswith("UNHEALTHY:")


def test_bench_against_the_real_pipeline(tmp_path: Path) -> None:
    """wyoming-bench as HA's stand-in, against ``serve`` on tiny models: every sample ok."""
    bench = shutil.which("wyoming-bench", path=str(Path(sys.executable).parent))
    assert bench is not None, "wyoming-bench is a test dependency"
    make_tiny_models_dir(tmp_path / "data" / "models")
    voice = tmp_path / "voices" / "austen"
    voice.mkdir(parents=True)
    shutil.copy(librivox("0870"), voice / "reference.wav")  # real speech, 7.1 s
    (voice / "voice.yaml").write_text(
        f"languages: [en_US]\nreference:\n  audio: reference.wav\n  text: {TEXT_0870}\n"
    )
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wyoming_sovits", "serve",
             "--backend", "tests/tiny_backend.py:make", "--uri", f"tcp://127.0.0.1:{port}",
             "--data-dir", str(tmp_path / "data"), "--voices-dir", str(tmp_path / "voices"),
             "--device", "cpu", "--dtype", "float32"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
    try:
        try:
            _wait_for_port(port, proc, timeout=180)  # models load and warm up first
        except AssertionError as err:
            raise AssertionError(f"{err}\n{log.read_text()}") from err
        result = subprocess.run(
            [bench, "tts", f"127.0.0.1:{port}", "--mode", "both", "--rounds", "2",
             "--no-unique", "--timeout", "60", "--texts", "Dinner is ready!"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
        report = result.stdout + result.stderr
        assert result.returncode == 0, report
        # Exit 0 only means not every measurement failed: read the per-mode counts.
        counts = dict(
            re.findall(r"^\[(non_streaming|streaming)\] ok=(\d+) fail=\d+$", report, re.M)
        )
        assert counts == {"non_streaming": "2", "streaming": "2"}, report
        assert not re.search(r"fail=[1-9]|FAIL", report), report
        # One sentence of 11-16 tokens (40 ms each) and its 0.3 s pause, in both modes.
        durations = [float(d) for d in re.findall(r"Audio\s+mean=([\d.]+)s", report)]
        assert len(durations) == 2, report
        assert all(11 * 0.04 + 0.3 - 0.01 <= d <= MAX_TOKENS * 0.04 + 0.3 + 0.01 for d in durations)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
