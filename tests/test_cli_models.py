"""``wyoming-sovits models inspect FILE`` on tiny official-format files and on bad ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from make_tiny_models import make_tiny_models
from scratch import scratch

from wyoming_sovits.__main__ import main
from wyoming_sovits.checkpoints import write_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    with scratch(tmp_path_factory, "tiny") as folder:
        yield make_tiny_models(folder)


def _inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["models", "inspect", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    ("name", "kind", "version", "config_line"),
    [
        ("gpt_v2", "gpt", "v2", "    phoneme_vocab_size: 732"),
        ("sovits_v2", "sovits", "v2", "    gin_channels: 512"),
        ("sovits_v2Pro", "sovits", "v2Pro  [header tag 05]", "    upsample_initial_channel: 512"),
        ("sovits_v2ProPlus", "sovits", "v2ProPlus  [header tag 06]", "    upsample_kernel_sizes: [20, 16, 8, 2, 2]"),
        ("sv", "sv", "ERes2NetV2", "  m_channels: 8"),
    ],
)  # fmt: skip
def test_inspect_reports_each_family(
    name: str,
    kind: str,
    version: str,
    config_line: str,
    tiny: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = _inspect(capsys, str(tiny[name]))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"file:         {tiny[name]}"
    assert lines[1].startswith(f"kind:         {kind} (")
    assert lines[2] == f"version:      {version}"
    assert lines[3].startswith("parameters:   ") and " tensors" in lines[3]
    assert lines[4] == "stored dtype: float16"
    assert "config:" in lines and config_line in lines


def test_inspect_json_matches_the_file(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _err = _inspect(capsys, "--json", str(tiny["sovits_v2ProPlus"]))
    report = json.loads(out)
    assert status == 0
    assert (report["kind"], report["version"], report["tag"]) == ("sovits", "v2ProPlus", "06")
    assert report["config"]["model"]["upsample_initial_channel"] == 768  # read from HParams
    assert report["stored_dtype"] == "float16" and report["n_params"] > 1_000_000


def test_inspect_unsupported_version_is_reported(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = tmp_path / "v4-lora.pth"
    lora.write_bytes(b"04" + tiny["sovits_v2"].read_bytes()[2:])
    status, out, _err = _inspect(capsys, str(lora))
    assert status == 0 and "version:      v4-LoRA (not supported by this server)" in out


def test_bad_files_exit_nonzero_with_one_line(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(tiny["sovits_v2"].read_bytes()[:5000])
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    cases = {
        truncated: "truncated or corrupt",
        text: "not a torch zip checkpoint",
        tmp_path / "missing.pth": "cannot read",
    }
    for path, reason in cases.items():
        status, out, err = _inspect(capsys, str(path))
        assert status == 1 and out == ""
        assert err.count("\n") == 1 and reason in err and str(path) in err


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_malicious_file_refused_by_the_real_command(tmp_path: Path) -> None:
    """Through ``python -m wyoming_sovits``, as a user would run it."""
    marker = tmp_path / "MARKER"
    evil = write_checkpoint(
        tmp_path / "evil.pth", {"weight": {"dec.x": torch.zeros(1)}, "config": _Exploit(marker)}
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("WYOMING_SOVITS_ARGS", None)
    result = subprocess.run(
        [sys.executable, "-m", "wyoming_sovits", "models", "inspect", str(evil)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "refused" in result.stderr and "posix.system" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not marker.exists()


def test_models_without_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    assert exit_info.value.code == 2
    assert "inspect" in capsys.readouterr().err
