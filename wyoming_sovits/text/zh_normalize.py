"""Chinese text normalization: numbers, dates, times, units and symbols → Chinese words.

Follows the rules of the reference frontend (PaddleSpeech's ``zh_normalization`` as
vendored by GPT-SoVITS) because the released weights were trained on its output, in the
same order: later rules see the words earlier rules wrote. A few readings the reference
gets plainly wrong are fixed here (each marked "fix:"; the golden records they change
are listed in ``tests/data/text_deviations/zh.yaml``).

Both Mandarin and Cantonese use :func:`verbalize`; each then maps punctuation its own way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources

_DIGIT_WORDS = "零一二三四五六七八九"
# Powers of ten that get their own word; larger spans reuse 万/亿 recursively.
_UNIT_WORDS = {1: "十", 2: "百", 3: "千", 4: "万", 8: "亿"}

_Rule = tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]


class ChineseNumberError(ValueError):
    """Raised for a number string the verbalizer cannot read (more than one point)."""


# ---------------------------------------------------------------------------- numbers


def read_digits(digits: str, *, yao: bool = False) -> str:
    """Digit by digit, as for codes and phone numbers; ``yao`` reads 1 as 幺."""
    words = "".join(_DIGIT_WORDS[int(d)] for d in digits)
    return words.replace("一", "幺") if yao else words


def _cardinal_parts(digits: str) -> list[str]:
    """Words of a non-negative integer string, with 零 where zeros are skipped inside."""
    significant = digits.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        lead_zero = len(significant) < len(digits)
        return ([_DIGIT_WORDS[0]] if lead_zero else []) + [_DIGIT_WORDS[int(significant)]]
    power = max(p for p in _UNIT_WORDS if p < len(significant))
    head, tail = digits[:-power], digits[-power:]
    return [*_cardinal_parts(head), _UNIT_WORDS[power], *_cardinal_parts(tail)]


def read_cardinal(digits: str) -> str:
    """An integer as a quantity: ``305`` → 三百零五, ``12`` → 十二 (not 一十二)."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return _DIGIT_WORDS[0]
    parts = _cardinal_parts(digits)
    if parts[:2] == ["一", "十"]:
        parts = parts[1:]
    return "".join(parts)


def read_number(number: str) -> str:
    """A decimal number: ``21.5`` → 二十一点五, ``.5`` → 零点五; trailing zeros keep one 零."""
    integer, point, decimals = number.partition(".")
    if "." in decimals:
        raise ChineseNumberError(f"number {number!r} has more than one decimal point")
    words = read_cardinal(integer)
    if decimals.endswith("0"):
        decimals = decimals.rstrip("0") + "0"
    if point and decimals:
        words = (words or _DIGIT_WORDS[0]) + "点" + read_digits(decimals)
    return words


def _read_clock_part(digits: str) -> str:
    """Minutes and seconds keep a leading zero as 零: ``05`` → 零五."""
    words = read_number(digits.lstrip("0"))
    return _DIGIT_WORDS[0] + words if digits.startswith("0") else words


# ------------------------------------------------------------------- dates and times

_DATE = re.compile(
    r"(?P<year>\d{4}|\d{2})年"
    r"(?:(?P<month>0?[1-9]|1[0-2])月)?"
    r"(?:(?P<day>0?[1-9]|[12][0-9]|30|31)(?P<day_word>[日号]))?"
)
_DATE_NUMERIC = re.compile(
    r"(?P<year>\d{4})(?P<sep>[- /.])(?P<month>0[1-9]|1[012])(?P=sep)(?P<day>0[1-9]|[12][0-9]|3[01])"
)
_CLOCK = r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?"
_TIME = re.compile(_CLOCK)
_TIME_RANGE = re.compile(_CLOCK + r"[~-]" + _CLOCK)


def _date(m: re.Match[str]) -> str:
    words = read_digits(m["year"]) + "年"
    if m["month"]:
        words += read_cardinal(m["month"]) + "月"
    if m["day"]:
        words += read_cardinal(m["day"]) + m["day_word"]
    return words


def _numeric_date(m: re.Match[str]) -> str:
    return f"{read_digits(m['year'])}年{read_cardinal(m['month'])}月{read_cardinal(m['day'])}日"


def _clock(hour: str, minute: str, second: str | None) -> str:
    """``7:30`` → 七点半, ``6:05`` → 六点零五分, seconds only when not zero."""
    words = read_number(hour) + "点"
    if minute.lstrip("0"):
        words += "半" if int(minute) == 30 else _read_clock_part(minute) + "分"
    if second and second.lstrip("0"):
        words += _read_clock_part(second) + "秒"
    return words


def _time(m: re.Match[str]) -> str:
    return _clock(m[1], m[2], m[3])


def _time_range(m: re.Match[str]) -> str:
    # fix: the reference tests the first minute for 半 on both ends (8:30-9:15 → 九点半).
    return _clock(m[1], m[2], m[3]) + "至" + _clock(m[4], m[5], m[6])


# ------------------------------------------------------------------ units and ranges

_UNIT_WORDS_TO_RANGE = "%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s"
# (?<!\d) before a digit run: a match may only start where the run starts, which finds
# the same matches as the reference but keeps long digit strings linear, not quadratic.
_NUM = r"(?:-?(?<!\d)\d+(?:\.\d+)?|\.\d+)"
_TO_RANGE = re.compile(rf"{_NUM}(?:{_UNIT_WORDS_TO_RANGE})~{_NUM}(?:{_UNIT_WORDS_TO_RANGE})")
_TEMPERATURE = re.compile(r"(-?)(?<!\d)(\d+(?:\.\d+)?)(°C|℃|度|摄氏度)")

# Unit abbreviations, tried in this order (so "cm2" wins over "cm").
_MEASURES = {
    "cm2": "平方厘米",
    "cm²": "平方厘米",
    "cm3": "立方厘米",
    "cm³": "立方厘米",
    "cm": "厘米",
    "db": "分贝",
    "ds": "毫秒",
    "kg": "千克",
    "km": "千米",
    "m2": "平方米",
    "m²": "平方米",
    "m³": "立方米",
    "m3": "立方米",
    "ml": "毫升",
    "m": "米",
    "mm": "毫米",
    "s": "秒",
}
# fix: a unit only counts as a whole Latin token; the reference rewrites every "m" and
# "s" anywhere (100Mbps → 100Mbp秒 → 幺零零秒, Home Assistant → 米秒秒秒).
_MEASURE_RULES = [
    (re.compile(rf"(?<![A-Za-z]){re.escape(abbr)}(?![A-Za-z])"), word)
    for abbr, word in _MEASURES.items()
]
# fix: network and power units the reference has no words for (it read -45dBm as 负四十五米).
_EXTRA_UNITS = {
    "Gbps": "吉比特每秒",
    "Mbps": "兆比特每秒",
    "kbps": "千比特每秒",
    "dBm": "分贝毫瓦",
    "dB": "分贝",
    "kWh": "千瓦时",
    "kW": "千瓦",
    "W": "瓦",
    "Hz": "赫兹",
}
_EXTRA_UNIT = re.compile(
    r"(-?)(?<!\d)(\d+(?:\.\d+)?) ?(" + "|".join(_EXTRA_UNITS) + r")(?![A-Za-z])"
)


# fix: currency signs (the reference drops ¥ and reads $ as a full stop). The
# full-width ￥ is not here: the reference uses it as a pause mark (see g2p_zh.clean).
_CURRENCY_WORDS = {"¥": "元", "$": "美元", "€": "欧元", "£": "英镑"}
_CURRENCY = re.compile(r"([¥$€£]) ?(\d+(?:\.\d+)?)")


def _currency(m: re.Match[str]) -> str:
    return read_number(m[2]) + _CURRENCY_WORDS[m[1]]


def _temperature(m: re.Match[str]) -> str:
    sign = "零下" if m[1] else ""
    unit = "摄氏度" if m[3] == "摄氏度" else "度"
    return sign + read_number(m[2]) + unit


def _extra_unit(m: re.Match[str]) -> str:
    return ("负" if m[1] else "") + read_number(m[2]) + _EXTRA_UNITS[m[3]]


def _measures(sentence: str) -> str:
    for pattern, word in _MEASURE_RULES:
        sentence = pattern.sub(word, sentence)
    return sentence


# ------------------------------------------------------------------- arithmetic

_SUPERSCRIPTS = {"⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6"}
_SUPERSCRIPTS |= {"⁷": "7", "⁸": "8", "⁹": "9", "ˣ": "x", "ʸ": "y", "ⁿ": "n"}
_SUP = "[" + "".join(_SUPERSCRIPTS) + "]*"
_NUM_OPERAND = rf"-?(?<!\d)\d+(?:\.\d+)?{_SUP}|\.\d+{_SUP}"
# fix: a letter is an operand only when it stands alone (x+1, a=b); the reference also
# took letters inside words, so Wi-Fi became Wi减Fi and then 减.
_ARITHMETIC = re.compile(
    rf"({_NUM_OPERAND}|(?<![A-Za-z])[A-Za-z]{_SUP})([-+×÷=])({_NUM_OPERAND}|[A-Za-z]{_SUP}(?![A-Za-z]))"
)
_OPERATORS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
_POWER = re.compile("[" + "".join(_SUPERSCRIPTS) + "]+")


def _arithmetic(m: re.Match[str]) -> str:
    return m[1] + _OPERATORS[m[2]] + m[3]


def _power(m: re.Match[str]) -> str:
    return "的" + "".join(_SUPERSCRIPTS[c] for c in m[0]) + "次方"


# ------------------------------------------------------- fractions, percent, phones

_FRACTION = re.compile(r"(-?)(?<!\d)(\d+)/(\d+)")
_PERCENT = re.compile(r"(-?)(?<!\d)(\d+(?:\.\d+)?)%")
_MOBILE = re.compile(r"(?<!\d)((?:\+?86 ?)?1(?:[38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)((?:0(?:10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
# fix: the arithmetic rule runs first in the reference and reads 010-62345678 (and
# 400-123-4567) with 减; dashed phone numbers are now read before it.
_LANDLINE_DASHED = re.compile(r"(?<!\d)(0(?:10|2[1-3]|[3-9]\d{2})-[1-9]\d{6,7})(?!\d)")
_SERVICE_NUMBER = re.compile(r"(400)(-)?\d{3}(-)?\d{4}")


def _fraction(m: re.Match[str]) -> str:
    return ("负" if m[1] else "") + read_number(m[3]) + "分之" + read_number(m[2])


def _percent(m: re.Match[str]) -> str:
    return ("负" if m[1] else "") + "百分之" + read_number(m[2])


def _mobile(m: re.Match[str]) -> str:
    return "，".join(read_digits(part, yao=True) for part in m[0].strip("+").split())


def _landline(m: re.Match[str]) -> str:
    return "，".join(read_digits(part, yao=True) for part in m[0].split("-"))


# ------------------------------------------------------------------ plain numbers

_RANGE = re.compile(r"(?<![-\d+×÷=])(-?\d+(?:\.\d+)?)[-~](-?\d+(?:\.\d+)?)(?![-\d+×÷=])")
_NUMBER = re.compile(r"(-?)(\d+(?:\.\d+)?)|(\.\d+)")
_NEGATIVE = re.compile(r"-(\d+)")
_VERSION = re.compile(r"(?<!\d)\d+\.\d+(?:\.\d+)?(?:\.\d+)+")
_DECIMAL = re.compile(r"(-?)(?<!\d)(\d+\.\d+)|(\.\d+)")
_CODE = re.compile(r"\d{3}\d*")
# Measure words after which a number is a count ("2个" → 两个): the reference's list.
_MEASURE_WORDS = (
    "处|台|架|枚|趟|幅|平|方|堵|间|床|株|批|项|例|列|篇|栋|注|亩|封|艘|把|目|套|段|人|所|朵|匹|张|"
    "座|回|场|尾|条|个|首|阙|阵|网|炮|顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|砣|座|客|贯|"
    "扎|捆|刀|令|打|手|罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|跳|枝|件|贴|针|线|管|名|位|"
    "身|堂|课|本|页|家|户|层|丝|毫|厘|分|钱|两|斤|担|铢|石|钧|锱|忽|(?:千|毫|微)克|毫|厘|(?:公)分|"
    "分|寸|尺|丈|里|寻|常|铺|程|(?:千|分|厘|毫|微)米|米|撮|勺|合|升|斗|石|盘|碗|碟|叠|桶|笼|盆|"
    "盒|杯|钟|斛|锅|簋|篮|盘|桶|罐|瓶|壶|卮|盏|箩|箱|煲|啖|袋|钵|年|月|日|季|刻|时|周|天|秒|分|"
    "小时|旬|纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|颗|幢|堆|条|根|支|道|面|片|张|颗|块|元|"
    "(?:亿|千万|百万|万|千|百)|(?:亿|千万|百万|万|千|百|美|)元|(?:亿|千万|百万|万|千|百|十|)吨|"
    "(?:亿|千万|百万|万|千|百|)块|角|毛|分"
    # fix: counts the reference lacks, so 8500步 is not read digit by digit.
    "|步|次|遍|千卡|卡|瓦"
)
_COUNT = re.compile(rf"(第)?(?<!\d)(\d+)([多余几+])?({_MEASURE_WORDS})")


def _number(m: re.Match[str]) -> str:
    if m[3]:
        return read_number(m[3])
    return ("负" if m[1] else "") + read_number(m[2])


def _range(m: re.Match[str]) -> str:
    return _NUMBER.sub(_number, m[1]) + "到" + _NUMBER.sub(_number, m[2])


def _negative(m: re.Match[str]) -> str:
    return "负" + read_number(m[1])


def _version(m: re.Match[str]) -> str:
    return "".join("点" if c == "." else read_number(c) for c in m[0])


def _count(m: re.Match[str]) -> str:
    words = read_number(m[2])
    # fix: an ordinal keeps 二 (第2个 → 第二个); the reference says 第两个.
    if words == "二" and not m[1]:
        words = "两"
    about = "多" if m[3] == "+" else (m[3] or "")
    return (m[1] or "") + words + about + m[4]


def _code(m: re.Match[str]) -> str:
    return read_digits(m[0], yao=True)


# ------------------------------------------------------------- symbols and letters

_SYMBOL_WORDS = {
    "/": "每",
    "①": "一",
    "②": "二",
    "③": "三",
    "④": "四",
    "⑤": "五",
    "⑥": "六",
    "⑦": "七",
    "⑧": "八",
    "⑨": "九",
    "⑩": "十",
    "α": "阿尔法",
    "β": "贝塔",
    "γ": "伽玛",
    "Γ": "伽玛",
    "δ": "德尔塔",
    "Δ": "德尔塔",
    "ε": "艾普西龙",
    "ζ": "捷塔",
    "η": "依塔",
    "θ": "西塔",
    "Θ": "西塔",
    "ι": "艾欧塔",
    "κ": "喀帕",
    "λ": "拉姆达",
    "Λ": "拉姆达",
    "μ": "缪",
    "ν": "拗",
    "ξ": "克西",
    "Ξ": "克西",
    "ο": "欧米克伦",
    "π": "派",
    "Π": "派",
    "ρ": "肉",
    "ς": "西格玛",
    "Σ": "西格玛",
    "σ": "西格玛",
    "τ": "套",
    "υ": "宇普西龙",
    "φ": "服艾",
    "Φ": "服艾",
    "χ": "器",
    "ψ": "普赛",
    "Ψ": "普赛",
    "ω": "欧米伽",
    "Ω": "欧米伽",
    # Operators left over after the arithmetic rule are still read (3+ → 三加).
    "+": "加",
    "-": "减",
    "×": "乘",
    "÷": "除",
    "=": "等",
}
_SYMBOL = re.compile("|".join(re.escape(s) for s in _SYMBOL_WORDS))
# fix: a hyphen inside a Latin word (Wi-Fi, e-mail) is not a minus sign.
_WORD_HYPHEN = re.compile(r"(?<=[A-Za-z])-(?=[A-Za-z])")
_BRACKETS_AND_MARKS = re.compile(r"[-—《》【】<=>{}()（）#&@“”^_|\\]")
_DROPPED_BEFORE_SPLIT = re.compile(r"[—《》【】<>{}()（）#&@“”^_|\\]")
_SENTENCE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")
_LINE_BREAKS = re.compile(r"\n+")
# Full-width Latin letters and digits (U+FF21…) → ASCII.
_FULL_TO_HALF = {
    code + 0xFEE0: code for code in (*range(ord("0"), ord("9") + 1), *range(ord("A"), ord("Z") + 1))
} | {code + 0xFEE0: code for code in range(ord("a"), ord("z") + 1)}


@cache
def _traditional_to_simplified() -> dict[int, str]:
    """The reference's character table (PaddleSpeech), trad → simp, from package data."""
    path = resources.files("wyoming_sovits").joinpath("data/text/zh/trad2simp.tsv")
    table: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            traditional, simplified = line.split("\t")
            table[ord(traditional)] = simplified
    return table


def to_simplified(text: str) -> str:
    """Traditional characters → simplified, character by character."""
    return text.translate(_traditional_to_simplified())


def _symbols(sentence: str) -> str:
    sentence = _WORD_HYPHEN.sub("", sentence)
    sentence = _SYMBOL.sub(lambda m: _SYMBOL_WORDS[m[0]], sentence)
    return _BRACKETS_AND_MARKS.sub("", sentence)


# ------------------------------------------------------------------------ pipeline

_RULES_BEFORE_ARITHMETIC: list[_Rule] = [
    (_DATE, _date),
    (_DATE_NUMERIC, _numeric_date),
    (_TIME_RANGE, _time_range),
    (_TIME, _time),
    (_TO_RANGE, lambda m: m[0].replace("~", "至")),
    (_TEMPERATURE, _temperature),
    (_EXTRA_UNIT, _extra_unit),
    (_CURRENCY, _currency),
]
# After the arithmetic and powers (x² → x的2次方, so these see the 2).
_RULES_AFTER_ARITHMETIC: list[_Rule] = [
    (_FRACTION, _fraction),
    (_PERCENT, _percent),
    (_MOBILE, _mobile),
    (_LANDLINE, _landline),
    (_RANGE, _range),
    (_NEGATIVE, _negative),
    (_VERSION, _version),
    (_DECIMAL, _number),
    (_COUNT, _count),
    (_CODE, _code),
    (_NUMBER, _number),
]


_DIGIT = re.compile(r"\d")
_LATIN_LETTER = re.compile("[A-Za-z]")


def verbalize_sentence(sentence: str) -> str:
    """Numbers, dates, times, units and symbols of one sentence → Chinese words.

    Every rule of a group guarded by ``_DIGIT`` needs a digit to match, and the rules
    write Chinese words only, so a group is skipped when no digit is left.
    """
    sentence = to_simplified(sentence).translate(_FULL_TO_HALF)
    if _DIGIT.search(sentence):
        for pattern, replace in _RULES_BEFORE_ARITHMETIC:
            sentence = pattern.sub(replace, sentence)
    if _LATIN_LETTER.search(sentence):  # every unit abbreviation has one
        sentence = _measures(sentence)
    if _DIGIT.search(sentence):
        sentence = _LANDLINE_DASHED.sub(_landline, sentence)
        sentence = _SERVICE_NUMBER.sub(_landline, sentence)
        if "=" not in sentence:
            # fix: outside an equation, 3-4 is a range (三到四); the reference reads 三减四.
            sentence = _RANGE.sub(_range, sentence)
    while _ARITHMETIC.search(sentence):
        sentence = _ARITHMETIC.sub(_arithmetic, sentence)
    sentence = _POWER.sub(_power, sentence)
    if _DIGIT.search(sentence):
        for pattern, replace in _RULES_AFTER_ARITHMETIC:
            sentence = pattern.sub(replace, sentence)
    return _symbols(sentence)


def split_sentences(text: str) -> list[str]:
    """Cut after clause punctuation, dropping spaces and brackets/quotes first.

    Rules such as the time and phone patterns must not see across a clause border,
    and spaces inside numbers ("2345 6789") must not split them.
    """
    text = _DROPPED_BEFORE_SPLIT.sub("", text.replace(" ", ""))
    text = _SENTENCE_END.sub("\\1\n", text).strip()
    return [part.strip() for part in _LINE_BREAKS.split(text)]


def verbalize(text: str) -> list[str]:
    """Split ``text`` into clauses and verbalize each (punctuation is left to the caller)."""
    return [verbalize_sentence(sentence) for sentence in split_sentences(text)]
