"""``wyoming-sovits voice add|list|remove``: manage the household voices in ``voices/``."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import soundfile as sf

from ..voices import VoiceNotFoundError, VoiceProfile, VoiceRegistry

_ADD_EPILOG = """\
The reference must be 3–10 s of clean speech, and --text must be EXACTLY what is said
in it (there is no automatic transcription yet).

  short recording (3–10 s of speech): used whole, --text is its transcript:
    wyoming-sovits voice add mom --audio mom.wav --language en_US --text "Good morning!"

  long recording (e.g. a minute): first let it choose the clip and listen to it:
    wyoming-sovits voice add mom --audio minute.flac --language en_US --preview clip.wav
  it prints the clip's times (e.g. 12.30-19.75) and exits 1; then transcribe that clip:
    wyoming-sovits voice add mom --audio minute.flac --language en_US \\
        --clip 12.30-19.75 --text "what is said in clip.wav" --aux-clips 2

Afterwards reload the Wyoming integration in Home Assistant to see the new voice.
"""
_CLIP_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "voice",
        help="add, list or remove household voices",
        description="Manage the voices in the voices folder (voices/<name>/voice.yaml).",
    )
    commands = parser.add_subparsers(dest="voice_command", metavar="SUBCOMMAND", required=True)
    add = commands.add_parser(
        "add",
        help="create a voice from a recording",
        description="Pick a 3–10 s reference clip from a recording and write voices/NAME/.",
        epilog=_ADD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", metavar="NAME", help="voice id: ASCII letters, digits, _ . -")
    add.add_argument(
        "--audio", type=Path, required=True, metavar="FILE", help="recording: wav, flac, ogg, mp3"
    )
    add.add_argument("--text", help="transcript of the clip that becomes the reference")
    add.add_argument(
        "--language",
        action="append",
        required=True,
        help="language of the transcript, e.g. en_US, zh_CN, ja_JP, ko_KR, zh_HK (Cantonese), "
        "or en/zh/ja/ko/yue; repeat to offer the voice for more languages",
    )
    add.add_argument("--clip", type=_clip_arg, metavar="START-END", help="seconds, e.g. 12.3-19.8")
    add.add_argument(
        "--aux-clips", type=int, default=0, metavar="N", help="also keep N clips for timbre only"
    )
    add.add_argument("--preview", type=Path, metavar="FILE", help="write the chosen clip here")
    add.add_argument("--display-name", help="name shown in Home Assistant (default: NAME)")
    add.add_argument("--voices-dir", type=Path, default=Path("voices"), help="default: voices")
    add.add_argument(
        "--force",
        action="store_true",
        help="replace an existing voice (keeps its weights, synthesis, styles)",
    )
    add.set_defaults(func=run_add)

    lst = commands.add_parser("list", help="show the voices and their problems")
    lst.add_argument("--voices-dir", type=Path, default=Path("voices"), help="default: voices")
    lst.set_defaults(func=run_list)

    remove = commands.add_parser("remove", help="delete a voice folder")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.add_argument("--voices-dir", type=Path, default=Path("voices"), help="default: voices")
    remove.set_defaults(func=run_remove)


def _clip_arg(value: str) -> tuple[float, float]:
    match = _CLIP_RE.match(value)
    if not match or float(match[1]) >= float(match[2]):
        raise argparse.ArgumentTypeError(f"{value!r} is not START-END in seconds, e.g. 12.3-19.8")
    return float(match[1]), float(match[2])


def run_add(args: argparse.Namespace) -> int:
    """Exit 0 when the voice was written, 1 with the reason (or the clip to transcribe)."""
    from ..enroll import EnrollmentError, TranscriptNeededError, enroll_voice, write_clip

    try:
        profile = enroll_voice(
            args.name,
            args.audio,
            text=args.text,
            language=args.language,
            voices_dir=args.voices_dir,
            display_name=args.display_name,
            overwrite=args.force,
            clip=args.clip,
            aux_clips=args.aux_clips,
        )
    except TranscriptNeededError as err:
        print(f"wyoming-sovits voice add: {err}", file=sys.stderr)
        if args.preview:
            try:
                write_clip(err.recording, err.choice.main.segment, args.preview)
            except (OSError, sf.SoundFileError) as write_err:
                print(f"cannot write the preview {args.preview}: {write_err}", file=sys.stderr)
            else:
                print(f"Wrote the clip to {args.preview}", file=sys.stderr)
        return 1
    except EnrollmentError as err:
        print(f"wyoming-sovits voice add: {err}", file=sys.stderr)
        return 1
    print(f"Added voice {profile.name!r} ({profile.display_name}): {profile.path}")
    print(f"  reference: {profile.reference.audio.name}, {_clip_info(profile)[0]}")
    print(f"  transcript ({profile.reference.language}): {profile.reference.text}")
    print("Reload the Wyoming integration in Home Assistant to offer it.")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print one row per voice folder, broken ones included with their error."""
    registry = VoiceRegistry(args.voices_dir)
    voices = registry.scan()
    rows = [("NAME", "DISPLAY NAME", "LANGUAGES", "CLIP", "WEIGHTS", "STATUS")]
    for voice in voices:
        clip, status = _clip_info(voice)
        languages = ",".join(voice.languages)
        rows.append((voice.name, voice.display_name, languages, clip, _weights(voice), status))
    for name, error in sorted(registry.errors.items()):
        rows.append((name, "-", "-", "-", "-", f"error: {error}"))
    if len(rows) == 1:
        print(f"No voices in {args.voices_dir}. Add one with: wyoming-sovits voice add --help")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Delete ``voices/NAME`` after confirmation; unknown names list the valid ones."""
    registry = VoiceRegistry(args.voices_dir)
    valid = sorted({*registry.names(), *registry.errors})
    if args.name not in valid:
        error = VoiceNotFoundError(args.name, valid)
        print(f"wyoming-sovits voice remove: {error}", file=sys.stderr)
        return 1
    folder = args.voices_dir / args.name
    files = sorted(p.name for p in folder.iterdir())
    if not args.yes:
        if not sys.stdin.isatty():
            print("wyoming-sovits voice remove: not a terminal; add --yes", file=sys.stderr)
            return 1
        answer = input(f"Delete {folder} ({', '.join(files)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return 1
    shutil.rmtree(folder)
    print(f"Removed voice {args.name!r} ({len(files)} files). Reload the Wyoming integration.")
    return 0


def _clip_info(voice: VoiceProfile) -> tuple[str, str]:
    """Reference duration (``7.1 s +2 aux``) and ``ok`` or why the server would refuse it."""
    try:
        seconds = sf.info(str(voice.reference.audio)).duration
    except (sf.SoundFileError, RuntimeError) as err:
        return "?", f"error: cannot read {voice.reference.audio.name}: {err}"
    aux = len(voice.reference.aux_audio)
    clip = f"{seconds:.1f} s" + (f" +{aux} aux" if aux else "")
    if not 3.0 <= seconds <= 10.0:
        return clip, f"error: reference lasts {seconds:.1f} s, must be 3–10 s"
    return clip, "ok"


def _weights(voice: VoiceProfile) -> str:
    own = {"gpt": voice.gpt_weights, "sovits": voice.sovits_weights}
    return "+".join(kind for kind, path in own.items() if path) or "base"
