"""English text normalization: the GPT-SoVITS v2 rules, with its audible bugs fixed.

The reference (``text/english.py:text_normalize`` + ``en_normalization/expend.py``) runs
a chain of regex rewrites that spell out ordinals, arithmetic, negative numbers, times,
units, money, decimals, fractions and cardinals, then strips everything outside
``[ A-Za-z'.,?!-]`` and splits runs of capitals into letters. Its output is what the
released weights were trained on, so we keep it wherever it is right. We differ where a
listener would hear a mistake (each case is pinned in ``tests/data/text_deviations/en.yaml``):

- clock times keep the user's a.m./p.m. instead of adding a second one, read ``10:05``
  as "ten oh five", say "A. M." (the reference's "a.m." is read "uh. em."), and keep a
  comma after the time (``7:30, then``); a bare ``7:30`` still gets its a.m./p.m., as in
  the reference;
- ``-3`` keeps the space before "negative"; ``B12`` becomes "B twelve";
- ``12/25/2024`` and ``2024-12-25`` are dates; ``555-123-4567`` is read digit by digit;
- ``Dr.``/``St.`` become Doctor/Saint before a name (Drive/Street after one), and a few
  abbreviations the dictionary misreads (``Tue.``, ``Oct.``, ``Ave.`` ...) are expanded;
- ``;``, ``:`` and dashes become pauses (the reference meant to map them to commas, but
  escaped its own pattern); curly apostrophes are kept; line breaks separate words;
- ``Wi-Fi`` is "wifi", not "Wi- Fi" (read "double-u I - fi"); ``°C``/``°F`` with a space, ``°``, ``℃``, euros,
  ``10am``, decades (``1990s``) and common units (kWh, kg, mph ...) are spoken.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import inflect

_ENGINE = inflect.engine()
# inflect keeps per-call state on the engine, so calls must not interleave.
_ENGINE_LOCK = threading.Lock()

_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_PUNCT = "!?…,.-"


class NumberWords:
    """Number spelling through inflect, cached and serialized."""

    @staticmethod
    @lru_cache(maxsize=4096)
    def cardinal(number: str, andword: str = "") -> str:
        """Digits as words; absurdly long numbers are read digit by digit."""
        with _ENGINE_LOCK:
            try:
                return str(_ENGINE.number_to_words(number, andword=andword))
            except inflect.NumOutOfRangeError:
                return digits(number)

    @staticmethod
    @lru_cache(maxsize=4096)
    def ordinal(number: str) -> str:
        """``25`` -> "twenty-fifth"."""
        with _ENGINE_LOCK:
            try:
                return str(_ENGINE.ordinal(str(_ENGINE.number_to_words(number))))
            except inflect.NumOutOfRangeError:
                return digits(number)

    @staticmethod
    @lru_cache(maxsize=4096)
    def year_like(num: int) -> str:
        """How the reference reads any integer: 1001-2999 as years, the rest as cardinals."""
        if 1000 < num < 3000:
            if num == 2000:
                return "two thousand"
            if 2000 < num < 2010:
                return "two thousand " + NumberWords.cardinal(str(num % 100), "and")
            if num % 100 == 0:
                return NumberWords.cardinal(str(num // 100), "and") + " hundred"
            with _ENGINE_LOCK:
                words = _ENGINE.number_to_words(str(num), andword="", zero="oh", group=2)
            return str(words).replace(", ", " ")
        return NumberWords.cardinal(str(num))


def digits(number: str) -> str:
    """``"4567"`` -> "four five six seven"."""
    return " ".join(_DIGIT_WORDS[int(d)] for d in number if d.isdigit())


@dataclass(frozen=True)
class _Rewrite:
    """``pattern.sub(repl, text)``; with ``needs``, skipped on text holding none of those
    characters (the pattern cannot match without one)."""

    pattern: re.Pattern[str]
    repl: str | Callable[[re.Match[str]], str]
    needs: str = ""

    def __call__(self, text: str) -> str:
        if self.needs and not any(c in text for c in self.needs):
            return text
        return self.pattern.sub(self.repl, text)


def _sub(
    pattern: str, repl: str | Callable[[re.Match[str]], str], flags: int = 0, needs: str = ""
) -> _Rewrite:
    return _Rewrite(re.compile(pattern, flags), repl, needs)


# ---------------------------------------------------------------------------
# Stage 1: clean the characters (ours; the reference drops line breaks and ";").


_DIGIT = re.compile(r"\d")
_CURLY_APOSTROPHE_RE = re.compile(r"(?<=[A-Za-z])[’‘](?=[A-Za-z])")
_NUMBER_DASH_RE = re.compile(r"(?<=\d)\s*[–—]\s*(?=\d)")
_DASH_RE = re.compile(r"\s*[—–]+\s*")
_SEMICOLON_RE = re.compile(r"\s*;")
# A colon between digits is a clock time; elsewhere it is a pause.
_COLON_RE = re.compile(r"\s*:(?!\d)|(?<!\d)\s*:")


def _clean_chars(text: str) -> str:
    """Whitespace and control characters separate words; pause marks become commas.

    Each rewrite runs only when its character is there: most sentences have none.
    """
    if not text.isprintable():  # false exactly when it holds a C* or Z* character but " "
        text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    text = text.replace("。", ".").replace("！", "!").replace("？", "?")
    text = text.replace("℃", "°C").replace("℉", "°F")
    if "’" in text or "‘" in text:
        text = _CURLY_APOSTROPHE_RE.sub("'", text)
    if "–" in text or "—" in text:
        text = _NUMBER_DASH_RE.sub(" to ", text)
        text = _DASH_RE.sub(", ", text)
    if ";" in text:
        text = _SEMICOLON_RE.sub(",", text)
    return _COLON_RE.sub(",", text) if ":" in text else text


# ---------------------------------------------------------------------------
# Stage 2: forms the reference does not know (ours).

_ABBREVIATIONS = {
    "Tue": "Tuesday", "Tues": "Tuesday", "Thu": "Thursday", "Thur": "Thursday",
    "Thurs": "Thursday", "Fri": "Friday", "Mon": "Monday",
    "Jan": "January", "Feb": "February", "Mar": "March", "Apr": "April", "Jun": "June",
    "Jul": "July", "Aug": "August", "Sep": "September", "Sept": "September",
    "Oct": "October", "Nov": "November", "Dec": "December",
}  # fmt: skip
# Expanded only before a date-like continuation, so "Mar." or "Mon." in prose stay.
_CALENDAR_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.(?=,| \d| [A-Z][a-z]{2,4}\.)")
_STREET_ABBREVIATIONS = {"Ave": "Avenue", "Rd": "Road", "Dr": "Drive", "St": "Street"}
_TITLE_ABBREVIATIONS = {"Dr": "Doctor", "St": "Saint", "Prof": "Professor"}
_TITLE_RE = re.compile(r"\b(Dr|St|Prof|Ave|Rd)\.(?=(\s+[A-Z])?)")
_STREET_BEFORE_RE = re.compile(r"(?:\b[A-Z][a-z]+|\d(?:st|nd|rd|th)) $")


def _expand_title(m: re.Match[str]) -> str:
    """Dr./St. before a name are titles; after a capitalised word or 5th they are streets."""
    abbr = m.group(1)
    before = m.string[max(0, m.start() - 40) : m.start()]
    sentence_start = re.search(r"(^|[.!?]\s+)[A-Z][a-z]+ $", before) is not None
    if abbr in _STREET_ABBREVIATIONS and _STREET_BEFORE_RE.search(before) and not sentence_start:
        # The abbreviation's dot may also end the sentence.
        ends = re.match(r"\s*($|[A-Z])", m.string[m.end() :]) is not None
        return _STREET_ABBREVIATIONS[abbr] + ("." if ends else "")
    if m.group(2) and abbr in _TITLE_ABBREVIATIONS:
        return _TITLE_ABBREVIATIONS[abbr]
    return m.group(0)


def _expand_calendar(m: re.Match[str]) -> str:
    return _ABBREVIATIONS[m.group(1)]


_MARKER = r"([AaPp])\.?[Mm]\b\.?"
_PAUSE_AFTER_RE = re.compile(r"\s*[,!?…]")


def _hour_words(hours: int) -> str:
    return NumberWords.cardinal(str(hours), "and")


def _period(letter: str, m: re.Match[str]) -> str:
    """The spoken marker, "A.M." or "p.m.", for the time matched by ``m``.

    Both are read as letters ("EY1 . EH1 M", "P IY1 . EH1 M"; "P. M." gives the same
    phones as the reference's "p.m."); "a.m." would be read "AH0 . EH1 M". Before a pause
    mark the closing dot is dropped: the final punctuation collapse keeps only the first of
    ".," so "7:30, then" lost its comma (the reference's bug); "M," keeps the pause.
    """
    marker = "A.M." if letter.lower() == "a" else "p.m."
    if _PAUSE_AFTER_RE.match(m.string, m.end()):
        return marker[:-1]
    return marker


def _expand_clock(m: re.Match[str]) -> str:
    """``H:MM`` with an optional marker; without one, 24-hour time as the reference reads it."""
    hours, minutes = int(m.group(1)), int(m.group(2))
    marker = m.group(3)
    if marker is None:
        marker = "a" if hours < 12 else "p"
    hours = hours % 12 or 12
    if minutes == 0:
        spoken = "o'clock"
    elif minutes < 10:
        spoken = "oh " + NumberWords.cardinal(str(minutes))
    else:
        spoken = NumberWords.cardinal(str(minutes))
    return f"{_hour_words(hours)} {spoken} {_period(marker, m)}"


def _expand_hour_marker(m: re.Match[str]) -> str:
    """``10am``, ``10 a.m.``, ``10PM``; a spaced "pm" is left (the dictionary says it right)."""
    hours, space, marker = int(m.group(1)), m.group(2), m.group(3)
    if space and marker in "pP" and "." not in m.group(0):
        return m.group(0)
    return f"{_hour_words(hours)} {_period(marker, m)}"


def _date(month: int, day: int, year: str) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    if len(year) == 2:
        year = ("20" if int(year) < 70 else "19") + year
    return (
        f"{_MONTHS[month - 1]} {NumberWords.ordinal(str(day))}, {NumberWords.year_like(int(year))}"
    )


def _expand_slash_date(m: re.Match[str]) -> str:
    """US order (M/D/Y) first; D/M/Y when the first part cannot be a month."""
    a, b, year = int(m.group(1)), int(m.group(2)), m.group(3)
    return _date(a, b, year) or _date(b, a, year) or m.group(0)


def _expand_iso_date(m: re.Match[str]) -> str:
    return _date(int(m.group(2)), int(m.group(3)), m.group(1)) or m.group(0)


def _expand_phone(m: re.Match[str]) -> str:
    return ", ".join(digits(group) for group in re.findall(r"\d+", m.group(0)))


def _expand_decade(m: re.Match[str]) -> str:
    words = NumberWords.year_like(int(m.group(1)))
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + "s"


_UNITS = {
    "kWh": ("kilowatt hour", "kilowatt hours"), "kW": ("kilowatt", "kilowatts"),
    "W": ("watt", "watts"), "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"),
    "lbs": ("pound", "pounds"), "lb": ("pound", "pounds"), "mph": ("mile per hour", "miles per hour"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"),
    "hrs": ("hour", "hours"), "hr": ("hour", "hours"), "mins": ("minute", "minutes"),
    "min": ("minute", "minutes"), "secs": ("second", "seconds"), "sec": ("second", "seconds"),
    "km/h": ("kilometer per hour", "kilometers per hour"), "dB": ("decibel", "decibels"),
}  # fmt: skip
# Single letters are too ambiguous after a space ("5 W" may be west); only attached.
_SPACED_UNITS = [u for u in _UNITS if len(u) > 1]
_UNIT_RE = re.compile(
    r"\b(\d+(?:\.\d+)?)(?:(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")"
    r"|\s(" + "|".join(sorted(_SPACED_UNITS, key=len, reverse=True)) + r"))(?![A-Za-z/])"
)


def _expand_unit(m: re.Match[str]) -> str:
    number, unit = m.group(1), m.group(2) or m.group(3)
    singular, plural = _UNITS[unit]
    return f"{number} {singular if number == '1' else plural}"


def _expand_degrees(m: re.Match[str]) -> str:
    return f"{m.group(1)} {'degree' if m.group(1) == '1' else 'degrees'}"


def _expand_euros(m: re.Match[str]) -> str:
    return _money(m.group(1) or m.group(2), ("euro", "euros"), ("cent", "cents"))


_WIFI_RE = re.compile(r"\bWi-?Fi\b", re.IGNORECASE)
_PHONE = r"(?<![\d-])(?:\(\d{3}\)\s?\d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\d{3}-\d{4})(?![\d-])"
_AMOUNT = r"(\d(?:[\d.,]*\d)?)"
# Our number forms, in order; every pattern needs a digit, most also one of the characters
# given with it.
_NUMBER_FORMS: list[_Rewrite] = [
    _sub(r"\b(\d{4})-(\d{2})-(\d{2})\b", _expand_iso_date, needs="-"),
    _sub(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b", _expand_slash_date, needs="/"),
    _sub(_PHONE, _expand_phone, needs="-"),
    _sub(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?:\s?" + _MARKER + ")?", _expand_clock, needs=":"),
    _sub(r"\b(1[0-2]|0?[1-9])(\s?)" + _MARKER, _expand_hour_marker, needs="mM"),
    _sub(r"\b(1\d\d0|20\d0)s\b", _expand_decade, needs="s"),
    _sub(r"(?<=\d)\s*°\s*([CF])\b", r"°\1", needs="°"),
    _sub(r"(\d+(?:\.\d+)?)°(?![CF]\b)", _expand_degrees, needs="°"),
    _Rewrite(_UNIT_RE, _expand_unit),
    _sub(rf"€\s?{_AMOUNT}|{_AMOUNT}\s?€", _expand_euros, needs="€"),
]


# Both abbreviations end with a dot.
_TITLES = _Rewrite(_TITLE_RE, _expand_title, needs=".")
_CALENDAR = _Rewrite(_CALENDAR_RE, _expand_calendar, needs=".")


def _expand_special(text: str) -> str:
    """Our additions, applied before the reference chain so it never sees these forms."""
    text = _TITLES(text)
    text = _CALENDAR(text)
    text = _WIFI_RE.sub("wifi", text)
    if _DIGIT.search(text) is None:
        return text
    for rewrite in _NUMBER_FORMS:
        text = rewrite(text)
    return text


# ---------------------------------------------------------------------------
# Stage 3: the reference chain (expend.normalize), in its order, with fixes noted.

_MEASUREMENTS = {
    "m": ("meter", "meters"), "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"), "ft": ("feet", "feet"),
    "L": ("liter", "liters"), "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"), "h": ("hour", "hours"), "min": ("minute", "minutes"),
    "s": ("second", "seconds"), "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}  # fmt: skip
_MEASUREMENT_RE = re.compile(
    r"\b([0-9]+(\.[0-9]+)?(" + "|".join(sorted(_MEASUREMENTS, key=len, reverse=True)) + r"))\b"
)
_ARITH_OPERAND = (
    r"((-?)((\d+)(\.\d+)?[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|(\.\d+[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|([A-Za-z][⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*))"
)
_ARITH_RE = re.compile(_ARITH_OPERAND + r"\s+([\+\-\×÷=])\s+" + _ARITH_OPERAND)
_ARITH_WORDS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}


def _expand_measurement(m: re.Match[str]) -> str:
    """Singular only for a bare integer 1 (the reference's rule: 1.0 is plural)."""
    unit = m.group(3)
    number = m.group(1)[: -len(unit)]
    singular, plural = _MEASUREMENTS[unit]
    return f"{number} {singular if m.group(2) is None and int(number) == 1 else plural}"


def _money(amount: str, main: tuple[str, str], sub: tuple[str, str]) -> str:
    """``126.80`` -> "126 dollars and 80 cents" (digits are spelled later)."""
    parts = amount.replace(",", "").split(".")
    if len(parts) > 2:
        return f"{amount} {main[1]}"
    whole = int(parts[0]) if parts[0] else 0
    cents = int(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else 0
    words = []
    if whole:
        words.append(f"{whole} {main[0] if whole == 1 else main[1]}")
    if cents:
        words.append(f"{cents} {sub[0] if cents == 1 else sub[1]}")
    return " and ".join(words) or f"zero {main[1]}"


def _expand_fraction(m: re.Match[str]) -> str:
    numerator, denominator = int(m.group(1)), int(m.group(2))
    top = NumberWords.cardinal(str(numerator), "and")
    if denominator == 1:
        return top
    if denominator == 2:
        return f"{top} {'half' if numerator == 1 else 'halves'}"
    return f"{top} {NumberWords.ordinal(str(denominator))}{'s' if numerator > 1 else ''}"


def _expand_decimal(m: re.Match[str]) -> str:
    whole, _, frac = m.group(1).partition(".")
    return whole + " point " + " ".join(frac)


def _expand_number(m: re.Match[str]) -> str:
    """Cardinal (years for 1001-2999); a space is added where it touches a letter (B12)."""
    s = m.string
    words = NumberWords.year_like(int(m.group(0))) if len(m.group(0)) < 30 else digits(m.group(0))
    before = " " if m.start() > 0 and s[m.start() - 1].isalpha() else ""
    after = " " if m.end() < len(s) and s[m.end()].isalpha() else ""
    return before + words + after


_REFERENCE_CHAIN: list[_Rewrite] = [
    # The reference turns "N. " anywhere into an ordinal ("It is 21. Then" -> "twenty-first,");
    # we only do it for list numbering at the start of a line.
    _sub(
        r"(?m)^(\s*)([0-9]+)\. ",
        lambda m: m.group(1) + NumberWords.ordinal(m.group(2)) + ", ",
        needs=".",
    ),
    # fix: the reference also ate the space before it
    _sub(r"(?<!\S)-(?=\d)", "negative ", needs="-"),
    _sub(r"([0-9][0-9,]+[0-9])", lambda m: m.group(1).replace(",", "")),
    _sub(_MEASUREMENT_RE.pattern, _expand_measurement),
    _sub(
        r"£([0-9.,]*[0-9]+)",
        lambda m: _money(m.group(1), ("pound", "pounds"), ("penny", "pence")),
        needs="£",
    ),
    _sub(
        r"([0-9.,]*[0-9]+)£",
        lambda m: _money(m.group(1), ("pound", "pounds"), ("penny", "pence")),
        needs="£",
    ),
    _sub(
        r"\$([0-9.,]*[0-9]+)",
        lambda m: _money(m.group(1), ("dollar", "dollars"), ("cent", "cents")),
        needs="$",
    ),
    _sub(
        r"([(0-9.,]*[0-9]+)\$",
        lambda m: _money(m.group(1), ("dollar", "dollars"), ("cent", "cents")),
        needs="$",
    ),
    _sub(r"([0-9]+\.\s*[0-9]+)", _expand_decimal, needs="."),
    _sub(r"([0-9]+)/([0-9]+)", _expand_fraction, needs="/"),
    _sub(r"[0-9]+(st|nd|rd|th)", lambda m: NumberWords.ordinal(m.group(0)[: -len(m.group(1))])),
    _sub(r"[0-9]+", _expand_number),
]


def _arithmetic(m: re.Match[str]) -> str:
    return m.group(1) + _ARITH_WORDS[m.group(8)] + m.group(9)


def _expand_reference(text: str) -> str:
    """The reference's number/unit/money chain (arithmetic first, repeated to a fixpoint).

    Every step but the arithmetic needs a digit, and the arithmetic an operator: text
    without them, most of it, skips those steps.
    """
    has_digit = _DIGIT.search(text) is not None
    first, rest = _REFERENCE_CHAIN[0], _REFERENCE_CHAIN[1:]
    if has_digit:
        text = first(text)
    if any(op in text for op in _ARITH_WORDS):
        for _ in range(len(text)):
            replaced = _ARITH_RE.sub(_arithmetic, text)
            if replaced == text:
                break
            text = replaced
    if has_digit:
        for step in rest:
            text = step(text)
    return text


# ---------------------------------------------------------------------------
# Stage 4: the reference's character filter and letter splitting.


_NOT_KEPT_RE = re.compile(r"[^ A-Za-z'.,?!\-]")
_IE = _sub(r"(?i)i\.e\.", "that is", needs=".")
_EG = _sub(r"(?i)e\.g\.", "for example", needs=".")
# Capitals inside a word are read as letters ("TV" -> "T V", "iPhone" -> "i Phone").
_INNER_CAPITAL_RE = re.compile(r"(?<!^)(?<!\s)([A-Z])")
_PUNCT_RUN_RE = re.compile(rf"([{re.escape(_PUNCT)}\s])([{re.escape(_PUNCT)}])+")


def _finish(text: str) -> str:
    if not text.isascii():  # ASCII has no accents to strip
        text = "".join(
            c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
        )
    text = text.replace("%", " percent")
    text = _NOT_KEPT_RE.sub("", text)
    text = _IE(text)
    text = _EG(text)
    text = _INNER_CAPITAL_RE.sub(r" \1", text)
    return _PUNCT_RUN_RE.sub(r"\1", text)


def normalize(text: str) -> str:
    """Spoken form of English ``text`` (the ``norm_text`` the phones are made from)."""
    return _finish(_expand_reference(_expand_special(_clean_chars(text))))
