"""English frontend against the reference's golden records, plus smart-home forms.

Layer 1: ``g2p(norm_text)`` reproduces the reference phones (and ids) exactly.
Layer 2: ``normalize(text)`` equals the reference's norm_text, except for the records in
``tests/data/text_deviations/en.yaml``, which must still differ in exactly the listed way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from wyoming_sovits.text import en_normalize
from wyoming_sovits.text.en_normalize import normalize
from wyoming_sovits.text.g2p_en import _WORD_AND_MARK, clean, english_g2p, g2p
from wyoming_sovits.text.symbols import phones_to_ids

DATA = Path(__file__).parent / "data"
TEXT = DATA / "contract" / "text"
DEVIATIONS = DATA / "text_deviations" / "en.yaml"


def _records() -> list[dict[str, Any]]:
    """clean_en records plus every en segment of segment_mixed, without repeats."""
    records = [json.loads(line) for line in (TEXT / "clean_en.jsonl").read_text().splitlines()]
    for line in (TEXT / "segment_mixed.jsonl").read_text().splitlines():
        mixed = json.loads(line)
        sentences = mixed["preprocess"]["sentences"]
        for seg in mixed["segments"] + [s for sent in sentences for s in sent["segments"]]:
            if seg["language"] == "en":
                records.append(seg)
    unique = {(r["text"], r["norm_text"]): r for r in records}
    return list(unique.values())


RECORDS = _records()
DEVIATION_LIST: list[dict[str, str]] = yaml.safe_load(DEVIATIONS.read_text())
BY_INPUT = {d["input"]: d for d in DEVIATION_LIST}


def test_corpus_is_complete() -> None:
    assert len(RECORDS) >= 64 + 10


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["text"][:40])
def test_phones_match_reference(record: dict[str, Any]) -> None:
    phones, word2ph = g2p(record["norm_text"])
    assert word2ph is None
    assert phones == record["phones"]
    assert phones_to_ids(phones, "v2") == record["ids"]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["text"][:40])
def test_normalization_matches_reference_or_listed_fix(record: dict[str, Any]) -> None:
    ours = normalize(record["text"])
    listed = BY_INPUT.get(record["text"])
    if listed is None:
        assert ours == record["norm_text"]
        return
    assert listed["reference"] == record["norm_text"], "deviation file is stale"
    assert ours == listed["ours"]
    assert ours != record["norm_text"], "listed deviation no longer differs: remove it"


def test_every_listed_deviation_is_a_corpus_record() -> None:
    inputs = {r["text"] for r in RECORDS}
    assert [d["input"] for d in DEVIATION_LIST if d["input"] not in inputs] == []
    assert all(d["why"].strip() for d in DEVIATION_LIST)


@pytest.mark.parametrize(
    ("word", "tag", "phones"),
    [
        ("read", "VBD", ["R", "EH1", "D"]),
        ("read", "VBP", ["R", "IY1", "D"]),
        ("read", "VB", ["R", "IY1", "D"]),  # a tag that is a prefix of VBP counts
        # g2p_en's table gives the verb reading AA1 ... EH0 (sic); we follow it.
        ("object", "VB", ["AA1", "B", "JH", "EH0", "K", "T"]),
        ("object", "NN", ["AH0", "B", "JH", "EH1", "K", "T"]),
        ("complex", "JJ", ["K", "AH0", "M", "P", "L", "EH1", "K", "S"]),
    ],
)
def test_homograph_rule(word: str, tag: str, phones: list[str]) -> None:
    assert english_g2p()._token(word, tag) == phones


def _nltk_tagger() -> Any:
    """NLTK's own tagger filled with the weights we ship (the reference's tagger)."""
    import gzip

    from nltk.tag.perceptron import PerceptronTagger

    from wyoming_sovits.text.g2p_en import DATA_DIR

    with gzip.open(DATA_DIR / "pos_tagger.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    tagger = PerceptronTagger(load=False)
    tagger.model.weights, tagger.tagdict = data["weights"], data["tagdict"]
    tagger.classes = tagger.model.classes = set(data["classes"])
    return tagger


def test_tagger_gives_nltks_tags() -> None:
    """Our tagger against NLTK's on 1,500 random sentences (known and unknown words,
    numbers, hyphens, punctuation): the same tag for every token, and a tagging stopped
    early gives the same first tags."""
    import random

    reference, ours = _nltk_tagger(), english_g2p().tagger
    rnd = random.Random(7)
    vocab = [*list(reference.tagdict)[:2000], "read", "record", "live", "close", "lead",
             "present", "use", "tear", "2024", "12", "well-known", "-x", "Xyzzy", "qwrtp",
             ",", ".", "?", "'s", "Smith"]  # fmt: skip
    for _ in range(1500):
        tokens = [rnd.choice(vocab) for _ in range(rnd.randint(1, 24))]
        expected = [tag for _, tag in reference.tag(tokens)]
        assert ours.tags(tokens) == expected, tokens
        upto = rnd.randint(0, len(tokens))
        assert ours.tags(tokens, upto) == expected[:upto], tokens


@pytest.mark.parametrize(
    "text",
    [
        "Please record the show and then read the record of it.",
        "I live here and the show is live, so close the close door.",
        "They present the present; we read, they read.",
        "Use the use case before the refund, then refund it.",
    ],
)
def test_homographs_read_the_whole_sentences_tags(text: str) -> None:
    """Tagging stops after the last homograph; each homograph's reading is that of NLTK
    tagging the whole sentence."""
    g2p_en = english_g2p()
    tokens = g2p_en.tokenizer.tokenize(text)
    tags = [tag for _, tag in _nltk_tagger().tag(tokens)]
    expected = [
        ph for token, tag in zip(tokens, tags, strict=True) for ph in g2p_en._token(token, tag)
    ]
    assert g2p_en.raw_phones(text) == expected


SMART_HOME = [
    ("It is 21.5°C inside.", "It is twenty-one point five degrees celsius inside."),
    ("It is 21.5 °C inside.", "It is twenty-one point five degrees celsius inside."),
    ("Outside it is 70°F.", "Outside it is seventy degrees fahrenheit."),
    ("Set it to 22℃.", "Set it to twenty-two degrees celsius."),
    ("Heat to 30°.", "Heat to thirty degrees."),
    ("It will drop to -5°C tonight.", "It will drop to negative five degrees celsius tonight."),
    ("Humidity is 15%.", "Humidity is fifteen percent."),
    ("Wake me at 10am.", "Wake me at ten A. M."),
    ("The show is at 9PM tonight.", "The show is at nine p.m. tonight."),
    ("Meet at 7:05 a.m.", "Meet at seven oh five A. M."),
    ("Dinner at 18:30.", "Dinner at six thirty p.m."),
    ("It's 0:15 now.", "It's twelve fifteen A. M. now."),
    ("Due 12/31/2024.", "Due December thirty-first, twenty twenty-four."),
    ("Due 25/12/2024.", "Due December twenty-fifth, twenty twenty-four."),
    ("Updated on 2025-01-05.", "Updated on January fifth, twenty twenty-five."),
    ("That costs $5.99.", "That costs five dollars and ninety-nine cents."),
    ("That costs €4.50.", "That costs four euros and fifty cents."),
    ("That costs 3€.", "That costs three euros."),
    ("That costs £1.", "That costs one pound."),
    ("Dr. Jones is here.", "Doctor Jones is here."),
    ("Mr. and Mrs. Lee called.", "Mr. and Mrs. Lee called."),
    ("Turn left on Elm St. now.", "Turn left on Elm Street now."),
    ("I live on Main St.", "I live on Main Street."),
    ("St. Louis is cold.", "Saint Louis is cold."),
    ("Prof. Chen called.", "Professor Chen called."),
    ("Used 12.5 kWh today.", "Used twelve point five kilowatt hours today."),
    ("A 60W bulb.", "A sixty watts bulb."),
    ("Drive at 30 mph.", "Drive at thirty miles per hour."),
    ("Wait 10 min please.", "Wait ten minutes please."),
    ("Music from the 1990s.", "Music from the nineteen nineties."),
    ("Gate B12 is open.", "Gate B twelve is open."),
    ("Call 555-1234 now.", "Call five five five, one two three four now."),
    ("Set it to 21. Thanks!", "Set it to twenty-one. Thanks!"),
    ("It’s on.", "It's on."),
    ("Kitchen\nlights on", "Kitchen lights on"),
    ("Hmm... ok!!!", "Hmm. ok!"),
    # A bare time gets the reference's a.m./p.m.; the comma after a time is a pause and stays.
    (
        "It's 7:30, 21.5°C outside",
        "It's seven thirty A. M, twenty-one point five degrees celsius outside",
    ),
    ("Meet at 7:30 pm, then dinner.", "Meet at seven thirty p.m, then dinner."),
    ("Battery at 15%, charging.", "Battery at fifteen percent, charging."),
    ("Wake me at 10am, please.", "Wake me at ten A. M, please."),
    ("Is it 7:30 a.m.?", "Is it seven thirty A. M?"),
]


@pytest.mark.parametrize(("text", "expected"), SMART_HOME, ids=[t for t, _ in SMART_HOME])
def test_smart_home_forms(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "before_comma"),
    [
        ("It's 7:30, 21.5°C outside", ["EY1", ".", "EH1", "M"]),
        ("Meet at 7:30 pm, then dinner.", ["P", "IY1", ".", "EH1", "M"]),
        ("Battery at 15%, charging.", ["P", "ER0", "S", "EH1", "N", "T"]),
    ],
)
def test_comma_after_time_or_percent_is_a_pause(text: str, before_comma: list[str]) -> None:
    phones = clean(text)[0]
    # The comma follows the marker's letters directly: one pause, not ". ,".
    assert phones.count(",") == 1
    comma = phones.index(",")
    assert phones[comma - len(before_comma) : comma] == before_comma


@pytest.mark.parametrize(
    "text",
    ["", " ", "...", "?!", "😀🏠", "\x00\x07\x1b[0m", "é", "ß", "İ", "你好", "-", "'", "1" * 200],
)
def test_bad_input_gives_valid_phones(text: str) -> None:
    phones, word2ph, norm = clean(text)
    assert word2ph is None
    assert isinstance(norm, str)
    assert len(phones) >= 1
    phones_to_ids(phones, "v2")  # every phone is a v2 symbol


def test_short_input_is_padded_once() -> None:
    assert g2p("")[0] == [","]
    assert g2p("Hi")[0] == [",", "HH", "AY1"]
    assert g2p("Hello there.")[0][0] != ","


def test_long_text_and_long_words() -> None:
    text = ("The kitchen light is on; it is 21.5°C and Wi-Fi works. " * 1800)[:100_000]
    start = time.perf_counter()
    phones, _, norm = clean(text)
    assert len(norm) > 50_000 and len(phones) > 50_000
    assert time.perf_counter() - start < 60
    start = time.perf_counter()
    phones = clean("xq" * 5000)[0]
    assert len(phones) > 100
    assert time.perf_counter() - start < 30


def test_tokenize_gives_the_tweet_tokenizers_tokens() -> None:
    """Chunk-by-chunk tokenizing (cached per chunk) against TweetTokenizer on the whole
    text: random text of normalized characters, with dotted names, ellipses, spaced
    dots and runs of marks, and text the fast path must leave to the tokenizer."""
    import random

    g2p_en = english_g2p()
    pieces = ["the", "I", "don't", "it's", "A.M.", "p.m.", "e.g.", "end.it", "google.com",
              "co.uk", "Wi-Fi", "rock-n-roll", "iPhone", "o", "D", "ab'", "'ab", "-ab", "x-",
              ".", "..", "...", "....", ",", "!", "?", "!!!!", "-", "--", "'", "''", " ",
              "    ", "foo_bar", "3", ":)", "a@b.com", "#tag", "<3"]  # fmt: skip
    rnd = random.Random(3)
    for _ in range(5000):
        n = rnd.randint(0, 10)
        text = "".join(rnd.choice(pieces) + rnd.choice(["", " ", "  "]) for _ in range(n))
        assert g2p_en.tokenize(text) == g2p_en.tokenizer.tokenize(text), repr(text)


def test_word_and_mark_chunks_skip_the_tweet_tokenizer() -> None:
    """A chunk of ASCII letters with at most one closing mark is read without the tokenizer:
    the same tokens, for dictionary words, capitals, letters that look like emoticon
    mouths or eyes, and random letter strings."""
    import random
    import string

    g2p_en = english_g2p()
    words = [*list(g2p_en.lexicon)[::50], "XD", "xD", "D", "P", "o", "Dp", "pD", "http", "www"]
    rnd = random.Random(5)
    words += ["".join(rnd.choices(string.ascii_letters, k=rnd.randint(1, 12))) for _ in range(3000)]
    checked = 0
    for word in words:
        for chunk in (word, word.upper(), word.capitalize(), *(word + m for m in ".,?!")):
            if _WORD_AND_MARK.fullmatch(chunk):
                checked += 1
                assert g2p_en._tokenize_chunk(chunk) == tuple(g2p_en.tokenizer.tokenize(chunk))
    assert checked > 20000
    assert g2p_en._tokenize_chunk("don't") == ("don't",)  # left to the tokenizer


def _rewrites() -> list[Any]:
    """Every normalization rewrite skipped on text without the characters it needs."""
    found = [*en_normalize._NUMBER_FORMS, *en_normalize._REFERENCE_CHAIN]
    found += [en_normalize._TITLES, en_normalize._CALENDAR, en_normalize._IE, en_normalize._EG]
    return [rewrite for rewrite in found if rewrite.needs]


def test_skipped_rewrites_cannot_match() -> None:
    """A rewrite skipped for want of a character gives what the plain substitution gives,
    on the corpus, the smart-home forms and random text of their pieces with the needed
    characters taken out."""
    import random

    rewrites = _rewrites()
    assert len(rewrites) == 21
    texts = [r["text"] for r in RECORDS] + [t for t, _ in SMART_HOME] + list(BY_INPUT)
    rnd = random.Random(11)
    pieces = [w for t in texts for w in t.split()] + ["1. ", "-3", "3/4", "i.e.", "E.G."]
    texts += [" ".join(rnd.choices(pieces, k=rnd.randint(1, 12))) for _ in range(3000)]
    for rewrite in rewrites:
        for text in texts:
            for variant in (text, "".join(c for c in text if c not in rewrite.needs)):
                assert rewrite(variant) == rewrite.pattern.sub(rewrite.repl, variant), variant


def test_unknown_word_cache_gives_fresh_lists() -> None:
    g2p_en = english_g2p()
    for word in ("Zorblatt", "smartplugs", "thermostat's", "x" * 40):
        first = g2p_en.lookup(word)
        assert list(g2p_en._read_unknown(word.lower())) == first
        first.append("!")
        assert g2p_en.lookup(word) == first[:-1]


def test_clean_is_fast_after_warm_up() -> None:
    sentence = (
        "Good morning! It's 7:30 a.m. and the living room is at 21.5°C, "
        "so I turned the heating down and closed the kitchen blinds."
    )
    assert len(sentence.split()) >= 20
    english_g2p()
    for _ in range(20):
        clean(sentence)
    runs = 200
    start = time.perf_counter()
    for _ in range(runs):
        clean(sentence)
    per_call_ms = (time.perf_counter() - start) / runs * 1000
    print(f"clean() of a 20-word sentence: {per_call_ms:.2f} ms")
    assert per_call_ms < 50  # target is < 5 ms on one free core; shared CI is slower


def test_import_pulls_in_neither_torch_nor_g2p_en() -> None:
    code = (
        "import sys\n"
        "from wyoming_sovits.text.g2p_en import clean\n"
        "clean('Read the book.')\n"
        "bad = [m for m in ('torch', 'g2p_en.g2p', 'g2p_en') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
