"""Weight download against a local fake of the model hub (no test touches the internet)."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wyoming_sovits import download
from wyoming_sovits.download import (
    ChecksumError,
    DownloadError,
    WeightFile,
    download_weights,
    missing_files,
    read_lock,
    verify_file,
    weight_set,
)

COMMIT = "a" * 40


class FakeHub:
    """Serves ``/{repo}/resolve/{rev}/{path}`` with the headers huggingface_hub reads."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.bad_etag: set[str] = set()
        self.requests: list[str] = []
        self.cut: dict[str, int] = {}  # name -> bytes sent before the connection drops (once)
        self.ranges: list[tuple[str, str | None]] = []  # (name, Range header) of each GET
        self.sent: dict[str, int] = {}  # body bytes sent per name

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _lookup(self) -> tuple[str, bytes] | None:
                prefix = f"/{download.HF_REPO}/resolve/"
                if not self.path.startswith(prefix):
                    return None
                _rev, _, name = self.path[len(prefix) :].partition("/")
                data = hub.files.get(name)
                return None if data is None else (name, data)

            def _headers(self, name: str, data: bytes, start: int = 0) -> None:
                digest = hashlib.sha256(data).hexdigest()
                if name in hub.bad_etag:
                    digest = "0" * 64
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{digest}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")

            def do_HEAD(self) -> None:
                hub.requests.append("HEAD " + self.path)
                found = self._lookup()
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self._headers(*found)
                self.end_headers()

            def do_GET(self) -> None:
                hub.requests.append("GET " + self.path)
                found = self._lookup()
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                name, data = found
                range_header = self.headers.get("Range")
                hub.ranges.append((name, range_header))
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                start = int(match[1]) if match else 0
                self.send_response(206 if start else 200)
                self._headers(name, data, start)
                self.end_headers()
                body = data[start : start + hub.cut.pop(name, len(data))]
                self.wfile.write(body)  # a cut body ends the response short: a broken download
                hub.sent[name] = hub.sent.get(name, 0) + len(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, str]]:
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    files = {f.path: f"content of {f.path}".encode() * 50 for f in weight_set("v2ProPlus")}
    fake = FakeHub(files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_downloads_verifies_and_records(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, endpoint = hub
    paths = download_weights(tmp_path, "v2ProPlus", endpoint=endpoint)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f.path for f in weight_set("v2ProPlus")
    ]
    for f in weight_set("v2ProPlus"):
        assert (tmp_path / f.path).read_bytes() == fake.files[f.path]
        assert verify_file(tmp_path, f) is None
    lock = read_lock(tmp_path)
    assert (
        lock["v2Pro/s2Gv2ProPlus.pth"]["sha256"]
        == hashlib.sha256(fake.files["v2Pro/s2Gv2ProPlus.pth"]).hexdigest()
    )
    assert lock["s1v3.ckpt"]["commit"] == COMMIT
    assert missing_files(tmp_path, "v2ProPlus") == []

    # A second run finds everything verified and asks the hub nothing.
    fake.requests.clear()
    download_weights(tmp_path, "v2ProPlus", endpoint=endpoint)
    assert fake.requests == []


def test_checksum_mismatch_is_refused_and_file_removed(
    hub: tuple[FakeHub, str], tmp_path: Path
) -> None:
    fake, endpoint = hub
    fake.bad_etag.add("v2Pro/s2Gv2ProPlus.pth")
    with pytest.raises(ChecksumError, match="does not match"):
        download_weights(tmp_path, "v2ProPlus", endpoint=endpoint)
    assert not (tmp_path / "v2Pro/s2Gv2ProPlus.pth").exists()
    assert "v2Pro/s2Gv2ProPlus.pth" not in read_lock(tmp_path)


def test_interrupted_download_resumes(
    hub: tuple[FakeHub, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file cut off mid-way is continued from the bytes on disk, not fetched again."""
    import huggingface_hub.constants

    fake, endpoint = hub
    name = "v2Pro/s2Gv2ProPlus.pth"
    fake.files[name] = bytes(range(256)) * 400  # 102400 bytes
    # huggingface_hub keeps what it wrote in whole chunks (10 MB by default): shrink them
    # so a small test file spans many.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    fake.cut[name] = 60000
    with pytest.raises(DownloadError, match=name) as info:  # the connection drops mid-file
        download_weights(tmp_path, "v2ProPlus", endpoint=endpoint)
    assert "run the same command again to resume" in str(info.value)
    assert "Could not reach" not in str(info.value)
    assert name not in read_lock(tmp_path) and not (tmp_path / name).exists()

    download_weights(tmp_path, "v2ProPlus", endpoint=endpoint)
    gets = [rng for got, rng in fake.ranges if got == name]
    assert gets[0] is None and len(gets) == 2
    assert gets[1] is not None and re.fullmatch(r"bytes=\d+-", gets[1]), gets[1]
    resumed_at = int(gets[1].removeprefix("bytes=").removesuffix("-"))
    assert 4096 <= resumed_at <= 60000
    assert fake.sent[name] == 60000 + len(fake.files[name]) - resumed_at  # no byte sent twice
    assert (tmp_path / name).read_bytes() == fake.files[name]
    assert read_lock(tmp_path)[name]["sha256"] == hashlib.sha256(fake.files[name]).hexdigest()
    assert verify_file(tmp_path, WeightFile(name, "sovits")) is None


def test_missing_on_hub_fails_with_placement_help(hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    fake, endpoint = hub
    del fake.files["sv/pretrained_eres2netv2w24s4ep4.ckpt"]
    with pytest.raises(DownloadError, match="place them here"):
        download_weights(tmp_path, "v2ProPlus", endpoint=endpoint)


def test_offline_fails_fast_with_placement_help(tmp_path: Path) -> None:
    # Nothing listens on port 9 of loopback: connection refused at once.
    with pytest.raises(DownloadError) as info:
        download_weights(tmp_path, "v2", endpoint="http://127.0.0.1:9")
    assert "Could not reach the model hub" in str(info.value)
    assert str(tmp_path / "gsv-v2final-pretrained/s2G2333k.pth") in str(info.value)


def test_unknown_version_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="v2ProPlus"):
        download_weights(tmp_path, "v9")


def test_hand_placed_file_is_reported_unverified(tmp_path: Path) -> None:
    f = weight_set("v2")[0]
    (tmp_path / f.path).parent.mkdir(parents=True)
    (tmp_path / f.path).write_bytes(b"x")
    assert verify_file(tmp_path, f) == "present, not verified (placed by hand)"
    assert f not in missing_files(tmp_path, "v2")


def test_cli_download_then_list(
    hub: tuple[FakeHub, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wyoming_sovits.__main__ import main

    _fake, endpoint = hub
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    assert main(["models", "list", "--data-dir", str(tmp_path)]) == 1
    assert "v2ProPlus  missing 9 of 9 files" in capsys.readouterr().out
    assert main(["models", "download", "--data-dir", str(tmp_path)]) == 0
    assert "9 files ready" in capsys.readouterr().out
    assert main(["models", "list", "--data-dir", str(tmp_path)]) == 0
    assert "v2ProPlus  installed" in capsys.readouterr().out


def test_cli_download_offline_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wyoming_sovits.__main__ import main

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert main(["models", "download", "--version", "v2", "--data-dir", str(tmp_path)]) == 1
    assert "place them here" in capsys.readouterr().err
