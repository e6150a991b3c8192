"""English grapheme-to-phoneme conversion, phone-for-phone compatible with GPT-SoVITS v2.

The released weights were trained on what the reference English frontend emits, so the
lookup order is part of the contract: punctuation passes through, single letters are
spelled, homographs are chosen by a part-of-speech tag, then the merged CMU dictionary,
a capitalised-name dictionary, letter spelling for short unknown words, possessives,
compound splitting (wordsegment) and finally the g2p_en neural predictor.

All data is read from files shipped in ``wyoming_sovits/data/text/en`` (plain text and
JSON, gzip-compressed) or from the installed ``g2p_en`` wheel (``checkpoint20.npz`` and
``homographs.en``). The ``g2p_en`` and ``nltk`` modules that would call ``nltk.download``
are never imported, so nothing is fetched at run time.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import wordsegment
from nltk.tokenize import TweetTokenizer

from wyoming_sovits.text.en_normalize import normalize
from wyoming_sovits.text.symbols import SYMBOLS_V2

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "text" / "en"

_V2_SYMBOLS = frozenset(SYMBOLS_V2)
_HAS_LETTER = re.compile("[a-z]")
_POSSESSIVE = re.compile(r"^([a-z]+)('s)$")
# Text of these characters only (all that ``normalize`` leaves) tokenizes word by word: no
# TweetTokenizer pattern spans a space or looks past one, except spaced dots (". .", one
# ellipsis token) and phone numbers, which need digits.
_PLAIN_TEXT = re.compile(r"[ A-Za-z'.,?!\-]*")
_SPACED_DOTS = re.compile(r"\. +\.")
# A word of ASCII letters, with one closing mark: TweetTokenizer's own reading of such a
# chunk is the word, then the mark (none of its URL, emoticon, handle or number patterns
# can match without another character).
_WORD_AND_MARK = re.compile(r"([A-Za-z]+)([.,?!]?)")

# Tokens the reference drops before its symbol check (word separators and the
# predictor's bookkeeping symbols; bare "UW" has no row in the v2 table).
_DROPPED = frozenset({" ", "<pad>", "UW", "</s>", "<s>"})
_VOICELESS = frozenset({"P", "T", "K", "F", "TH", "HH"})
_SIBILANT = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})
# Unknown words longer than this are cut into pieces of this size for the predictor: the
# reference would segment and encode the whole string, which is slow and no better for
# nonsense (a 10,000-letter token would take tens of seconds).
_MAX_OOV_CHARS = 32
# Homograph overrides the reference applies on top of g2p_en's list.
_HOMOGRAPH_FIXES: dict[str, tuple[list[str], list[str], str]] = {
    "read": (["R", "IY1", "D"], ["R", "EH1", "D"], "VBP"),
    "complex": (
        ["K", "AH0", "M", "P", "L", "EH1", "K", "S"],
        ["K", "AA1", "M", "P", "L", "EH0", "K", "S"],
        "JJ",
    ),
}


class EnglishDataError(RuntimeError):
    """Raised when a data file of the English frontend is missing or malformed."""


def _read_lexicon(path: Path) -> dict[str, list[str]]:
    """Read ``word<TAB>PH PH ...`` lines (first pronunciation of each word only)."""
    if not path.is_file():
        raise EnglishDataError(f"English lexicon {path} is missing; reinstall wyoming-sovits")
    lexicon: dict[str, list[str]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.rstrip("\n").partition("\t")
            lexicon[word] = phones.split(" ")
    return lexicon


def _g2p_en_dir() -> Path:
    """Locate the installed g2p_en package without importing it (its import downloads)."""
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        raise EnglishDataError("package g2p-en is not installed: pip install g2p-en==2.1.0")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_homographs(path: Path) -> dict[str, tuple[list[str], list[str], str]]:
    """``HEADWORD|PRON1|PRON2|POS``: PRON1 when the tag starts with POS, else PRON2."""
    table: dict[str, tuple[list[str], list[str], str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, pron1, pron2, pos = line.strip().split("|")
        table[head.lower()] = (pron1.split(), pron2.split(), pos)
    table.update(_HOMOGRAPH_FIXES)
    return table


class PosTagger:
    """NLTK's averaged-perceptron English tagger (the one g2p_en tags with), read from our
    copy of its weights: greedy, left to right, each tag from the words around it and the
    two tags before; words the tag dictionary knows get its tag.

    Only homographs read their tag, so ``tags`` stops after a given token: the tags it
    returns are those of tagging the whole sentence (a tag depends on later words, never
    on later tags). The arithmetic is NLTK's, feature by feature in its order, so the
    scores and the tie-break (highest score, then the alphabetically last tag) are too.
    """

    START = ("-START-", "-START2-")
    END = ("-END-", "-END2-")

    def __init__(
        self, weights: dict[str, dict[str, float]], tagdict: dict[str, str], classes: list[str]
    ) -> None:
        self.weights, self.tagdict = weights, tagdict
        self.classes = sorted(set(classes))
        self._known = frozenset(self.classes)

    @classmethod
    def load(cls, path: Path) -> PosTagger:
        if not path.is_file():
            raise EnglishDataError(f"English tagger {path} is missing; reinstall wyoming-sovits")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        return cls(data["weights"], data["tagdict"], data["classes"])

    @staticmethod
    def _normal(word: str) -> str:
        if "-" in word and word[0] != "-":
            return "!HYPHEN"
        if word.isdigit() and len(word) == 4:
            return "!YEAR"
        if word and word[0].isdigit():
            return "!DIGITS"
        return word.lower()

    def tags(self, tokens: list[str], upto: int | None = None) -> list[str]:
        """The tags of ``tokens[:upto]`` (all by default), as tagging all of ``tokens``."""
        context = [*self.START, *(self._normal(w) for w in tokens), *self.END]
        prev, prev2 = self.START
        out: list[str] = []
        for i, word in enumerate(tokens[:upto]):
            tag = self.tagdict.get(word)
            if not tag:
                tag = self._predict(self._features(i + 2, word, context, prev, prev2))
            out.append(tag)
            prev, prev2 = tag, prev
        return out

    @staticmethod
    def _features(i: int, word: str, context: list[str], prev: str, prev2: str) -> dict[str, int]:
        """NLTK's feature set of the word at ``context[i]``, in its order."""
        names = (
            "bias",
            f"i suffix {word[-3:]}",
            f"i pref1 {word[0] if word else ''}",
            f"i-1 tag {prev}",
            f"i-2 tag {prev2}",
            f"i tag+i-2 tag {prev} {prev2}",
            f"i word {context[i]}",
            f"i-1 tag+i word {prev} {context[i]}",
            f"i-1 word {context[i - 1]}",
            f"i-1 suffix {context[i - 1][-3:]}",
            f"i-2 word {context[i - 2]}",
            f"i+1 word {context[i + 1]}",
            f"i+1 suffix {context[i + 1][-3:]}",
            f"i+2 word {context[i + 2]}",
        )
        features: dict[str, int] = {}
        for name in names:
            features[name] = features.get(name, 0) + 1
        return features

    def _predict(self, features: dict[str, int]) -> str:
        scores: dict[str, float] = {}
        weights = self.weights
        for feature, count in features.items():
            row = weights.get(feature)
            if row is None:
                continue
            for label, weight in row.items():
                scores[label] = scores.get(label, 0.0) + count * weight
        best = max(scores.items(), key=lambda kv: (kv[1], kv[0]), default=None)
        if best is not None and best[1] > 0.0 and best[0] in self._known:
            return best[0]
        # A tag with no score has 0.0: it may beat or tie the best (then the later name wins).
        return max(self.classes, key=lambda label: (scores.get(label, 0.0), label))


class OovPredictor:
    """g2p_en's GRU encoder-decoder (checkpoint20) for words no dictionary knows.

    The arithmetic mirrors g2p_en's numpy code step for step, in float32, so the greedy
    argmax picks the same phones as the reference.
    """

    GRAPHEMES = ("<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz")
    PHONEMES = (
        "<pad>", "<unk>", "<s>", "</s>", "AA0", "AA1", "AA2", "AE0", "AE1", "AE2", "AH0", "AH1",
        "AH2", "AO0", "AO1", "AO2", "AW0", "AW1", "AW2", "AY0", "AY1", "AY2", "B", "CH", "D", "DH",
        "EH0", "EH1", "EH2", "ER0", "ER1", "ER2", "EY0", "EY1", "EY2", "F", "G", "HH", "IH0", "IH1",
        "IH2", "IY0", "IY1", "IY2", "JH", "K", "L", "M", "N", "NG", "OW0", "OW1", "OW2", "OY0",
        "OY1", "OY2", "P", "R", "S", "SH", "T", "TH", "UH0", "UH1", "UH2", "UW", "UW0", "UW1",
        "UW2", "V", "W", "Y", "Z", "ZH",
    )  # fmt: skip
    MAX_PHONES = 20

    def __init__(self, npz_path: Path) -> None:
        with np.load(npz_path) as w:
            self.w = {k: w[k] for k in w.files}
        self.g2idx = {g: i for i, g in enumerate(self.GRAPHEMES)}

    @staticmethod
    def _cell(
        x: np.ndarray,
        h: np.ndarray,
        w_ih: np.ndarray,
        w_hh: np.ndarray,
        b_ih: np.ndarray,
        b_hh: np.ndarray,
    ) -> np.ndarray:
        """One GRU step; gates are ordered reset, update, new as in PyTorch."""
        gi = np.matmul(x, w_ih.T) + b_ih  # (1, 3H)
        gh = np.matmul(h, w_hh.T) + b_hh  # (1, 3H)
        split = gi.shape[-1] * 2 // 3
        rz = 1 / (1 + np.exp(-(gi[:, :split] + gh[:, :split])))
        r, z = np.split(rz, 2, -1)
        n = np.tanh(gi[:, split:] + r * gh[:, split:])
        return (1 - z) * n + z * h

    def __call__(self, word: str) -> list[str]:
        """Greedy-decode up to 20 phones for ``word`` (lowercase; other chars are <unk>)."""
        w = self.w
        ids = [self.g2idx.get(c, 1) for c in word] + [2]
        x = np.take(w["enc_emb"], np.expand_dims(ids, 0), axis=0)  # (1, T, 64)
        h = np.zeros((1, w["enc_w_hh"].shape[-1]), np.float32)  # (1, 128)
        for t in range(len(ids)):
            h = self._cell(
                x[:, t, :], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"]
            )
        dec = np.take(w["dec_emb"], [2], axis=0)  # (1, 64): <s>
        preds: list[str] = []
        for _ in range(self.MAX_PHONES):
            h = self._cell(dec, h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            best = int((np.matmul(h, w["fc_w"].T) + w["fc_b"]).argmax())
            if best == 3:  # </s>
                break
            preds.append(self.PHONEMES[best])
            dec = np.take(w["dec_emb"], [best], axis=0)
        return preds


@dataclass
class EnglishG2p:
    """Everything the English lookup chain needs, loaded once."""

    lexicon: dict[str, list[str]]
    names: dict[str, list[str]]
    homographs: dict[str, tuple[list[str], list[str], str]]
    tagger: PosTagger
    segmenter: wordsegment.Segmenter
    predictor: OovPredictor
    tokenizer: TweetTokenizer
    _unknown: Callable[[str], tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _word_tokens: Callable[[str], tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Both depend on the word alone, and words come back sentence after sentence: the
        # reading of a word no dictionary knows (compound split, neural predictor: about
        # 1 ms), and the tokens of a space-free chunk (the tokenizer's big regex: ~4 µs a word).
        self._unknown = lru_cache(maxsize=4096)(self._read_unknown)
        self._word_tokens = lru_cache(maxsize=8192)(self._tokenize_chunk)

    @classmethod
    def load(cls, data_dir: Path = DATA_DIR) -> EnglishG2p:
        g2p_en_dir = _g2p_en_dir()
        segmenter = wordsegment.Segmenter()
        segmenter.load()
        return cls(
            lexicon=_read_lexicon(data_dir / "cmudict.tsv.gz"),
            names=_read_lexicon(data_dir / "names.tsv.gz"),
            homographs=_read_homographs(g2p_en_dir / "homographs.en"),
            tagger=PosTagger.load(data_dir / "pos_tagger.json.gz"),
            segmenter=segmenter,
            predictor=OovPredictor(g2p_en_dir / "checkpoint20.npz"),
            tokenizer=TweetTokenizer(),
        )

    def tokenize(self, text: str) -> list[str]:
        """``TweetTokenizer().tokenize(text)``, chunk by chunk when that gives the same tokens."""
        if _PLAIN_TEXT.fullmatch(text) and not _SPACED_DOTS.search(text):
            return [token for chunk in text.split(" ") for token in self._word_tokens(chunk)]
        return self.tokenizer.tokenize(text)

    def _tokenize_chunk(self, chunk: str) -> tuple[str, ...]:
        plain = _WORD_AND_MARK.fullmatch(chunk)
        if plain is not None:
            return (plain[1], plain[2]) if plain[2] else (plain[1],)
        return tuple(self.tokenizer.tokenize(chunk))

    def raw_phones(self, text: str) -> list[str]:
        """Phones and punctuation tokens of ``text``, before the symbol filter."""
        tokens = self.tokenize(text)
        # Tags are read by homographs only: tag up to the last one (most sentences: none).
        last = max((i for i, t in enumerate(tokens) if self._is_homograph(t)), default=-1)
        tags = self.tagger.tags(tokens, last + 1) if last >= 0 else []
        phones: list[str] = []
        for i, token in enumerate(tokens):
            phones.extend(self._token(token, tags[i] if i <= last else ""))
        return phones

    def _is_homograph(self, token: str) -> bool:
        """Whether ``_token`` reads this token's tag."""
        word = token.lower()
        return len(word) > 1 and word in self.homographs and _HAS_LETTER.search(word) is not None

    def _token(self, token: str, tag: str) -> list[str]:
        word = token.lower()
        if _HAS_LETTER.search(word) is None:
            return [word]
        if len(word) == 1:
            # Only a capital "A" standing alone is the letter name; "a" is the article.
            return ["EY1"] if token == "A" else self.lexicon.get(word, [])
        if word in self.homographs:
            pron1, pron2, pos1 = self.homographs[word]
            # A tag shorter than pos1 that is a prefix of it also counts (e.g. "VB" for "VBP").
            if tag.startswith(pos1) or (len(tag) < len(pos1) and pos1.startswith(tag)):
                return pron1
            return pron2
        return self.lookup(token)

    def lookup(self, token: str) -> list[str]:
        """Dictionary, names, spelling, possessive, compounds, then the neural predictor."""
        word = token.lower()
        if len(word) > 1 and word in self.lexicon:
            return self.lexicon[word]
        if token.istitle() and word in self.names:
            return self.names[word]
        if len(word) <= 3:
            return self._spell(word)
        return list(self._unknown(word))

    def _read_unknown(self, word: str) -> tuple[str, ...]:
        """Possessive, compound parts, or the predictor, for a lowercase word of 4+ letters."""
        if _POSSESSIVE.match(word):
            return tuple(self._possessive(word[:-2]))
        if len(word) > _MAX_OOV_CHARS:
            pieces = [word[i : i + _MAX_OOV_CHARS] for i in range(0, len(word), _MAX_OOV_CHARS)]
            return tuple(ph for piece in pieces for ph in self.predictor(piece))
        parts = self.segmenter.segment(word)
        if len(parts) == 1:
            return tuple(self.predictor(word))
        return tuple(ph for part in parts for ph in self.lookup(part))

    def _spell(self, word: str) -> list[str]:
        """Short unknown words are read letter by letter ("a" as the letter name here)."""
        phones: list[str] = []
        for ch in word:
            if ch == "a":
                phones.append("EY1")
            elif not ch.isalpha():
                phones.append(ch)
            else:
                phones.extend(self.lexicon.get(ch, []))
        return phones

    def _possessive(self, stem: str) -> list[str]:
        """Stem + 's, voiced after the stem's last phone the way English does it."""
        phones = list(self.lookup(stem))
        last = phones[-1] if phones else ""
        if last in _VOICELESS:
            return [*phones, "S"]
        if last in _SIBILANT:
            return [*phones, "AH0", "Z"]
        return [*phones, "Z"]


_LOCK = threading.Lock()
_INSTANCE: list[EnglishG2p] = []


def english_g2p() -> EnglishG2p:
    """The shared, lazily loaded frontend (about 1 s and ~100 MB the first time)."""
    with _LOCK:
        if not _INSTANCE:
            _INSTANCE.append(EnglishG2p.load())
        return _INSTANCE[0]


def _to_symbols(raw: list[str]) -> list[str]:
    """Keep v2 symbols only, as the reference does: ``'`` becomes ``-``, the rest is dropped."""
    phones: list[str] = []
    for ph in raw:
        if ph in _DROPPED:
            continue
        ph = "UNK" if ph == "<unk>" else ph
        if ph in _V2_SYMBOLS:
            phones.append(ph)
        elif ph == "'":
            phones.append("-")
    return phones


def g2p(norm_text: str) -> tuple[list[str], None]:
    """ARPAbet phones and punctuation for normalized English text.

    Fewer than four phones get a leading ``","``: the reference pads short English
    input this way before the ids are looked up, so callers must not pad again.
    """
    phones = _to_symbols(english_g2p().raw_phones(norm_text))
    if len(phones) < 4:
        phones = [",", *phones]
    return phones, None


def clean(text: str) -> tuple[list[str], None, str]:
    """``normalize`` then ``g2p``: (phones, None, normalized text)."""
    norm_text = normalize(text)
    phones, _ = g2p(norm_text)
    return phones, None, norm_text
