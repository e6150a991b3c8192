"""``wyoming-sovits voice add|list|remove`` through the real argument parser."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import soundfile as sf
from test_enroll import TEXT_0870, librivox, long_recording, write_wav

from wyoming_sovits.__main__ import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["voice", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_remove_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    voices = str(tmp_path / "voices")
    code, out, err = run(capsys, "list", "--voices-dir", voices)
    assert code == 0 and "No voices" in out

    code, out, err = run(
        capsys, "add", "austen", "--audio", str(librivox("0870")), "--language", "en_US",
        "--text", TEXT_0870, "--display-name", "Miss Austen", "--voices-dir", voices,
    )  # fmt: skip
    assert code == 0, err
    assert "Added voice 'austen'" in out and "Reload the Wyoming integration" in out

    (tmp_path / "voices" / "broken").mkdir()
    (tmp_path / "voices" / "broken" / "voice.yaml").write_text("languages: [en_US]\n")
    code, out, err = run(capsys, "list", "--voices-dir", voices)
    assert code == 0
    header, austen, broken = out.splitlines()
    assert header.split()[:2] == ["NAME", "DISPLAY"]
    cells = austen.split()
    assert cells[:4] == ["austen", "Miss", "Austen", "en_US"] and cells[5:] == ["s", "base", "ok"]
    assert 6.5 <= float(cells[4]) <= 7.1
    assert broken.startswith("broken") and "error:" in broken and "reference" in broken

    code, out, err = run(capsys, "remove", "nobody", "--voices-dir", voices)
    assert code == 1 and "'nobody' not found; available voices: austen, broken" in err
    code, out, err = run(capsys, "remove", "austen", "--voices-dir", voices)  # stdin: no tty
    assert code == 1 and "--yes" in err
    assert (tmp_path / "voices" / "austen").is_dir()
    code, out, err = run(capsys, "remove", "broken", "--yes", "--voices-dir", voices)
    assert code == 0 and not (tmp_path / "voices" / "broken").exists()


def test_remove_asks_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "erna"
    folder.mkdir()
    (folder / "voice.yaml").write_text("languages: [de_DE]\n")  # broken, still removable
    tty = io.StringIO("n\n")
    tty.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", tty)
    code, out, _ = run(capsys, "remove", "erna", "--voices-dir", str(tmp_path))
    assert code == 1 and "Nothing deleted" in out and folder.is_dir()


def test_long_recording_two_step_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = write_wav(tmp_path / "minute.wav", long_recording()[0])
    preview = tmp_path / "clip.wav"
    base = ["add", "jane", "--audio", str(wav), "--language", "en_US"]
    base += ["--voices-dir", str(tmp_path / "voices")]
    code, out, err = run(capsys, *base, "--preview", str(preview))
    assert code == 1
    assert "needs a transcript" in err and "--clip " in err
    clip = err.split("--clip ")[1].split()[0]
    start, end = (float(t) for t in clip.split("-"))
    assert sf.info(preview).duration == pytest.approx(end - start, abs=0.01)
    assert not (tmp_path / "voices" / "jane").exists()

    code, out, err = run(capsys, *base, "--clip", clip, "--text", TEXT_0870, "--aux-clips", "2")
    assert code == 0, err
    code, out, _ = run(capsys, "list", "--voices-dir", str(tmp_path / "voices"))
    assert "+2 aux" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clip", "9-3"], "START-END"),
        (["--clip", "soon"], "START-END"),
        ([], "--language"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["voice", "add", "x", "--audio", "x.wav"]
    base += ["--language", "en_US"] if argv else []
    with pytest.raises(SystemExit) as info:
        main([*base, *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_add_reports_enrollment_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "add", "Bad Name", "--audio", "x.wav", "--language", "en_US", "--text", "Hi.",
        "--voices-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 1 and err.startswith("wyoming-sovits voice add: voice name 'Bad Name'")
