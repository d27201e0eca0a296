"""Praat TextGrid reader: word and phone events of a story.

Reads the three text formats Praat writes: long ("ooTextFile", ``xmin = 0`` lines), short (bare
values) and chronological (``"Praat chronological TextGrid text file"``). Files may be UTF-8 (with
or without BOM), UTF-16 (with BOM) or Latin-1, with LF or CRLF line endings.

Hand-written because no maintained dependency here reads all three formats with both encodings;
the long and short formats are the same token stream (strings, numbers, ``<exists>``) once
labels such as ``xmin =`` and indices such as ``[1]`` are skipped, so one tokenizer serves both.

Tier choice (ds003020: tier 0 = phones, tier 1 = words, names "phone"/"word" unconfirmed —
``../shared/reference/ds003020.md``): an IntervalTier named ``phone``/``phones`` or
``word``/``words`` (any case) when present, else by position among the IntervalTiers
(0 = phones, 1 = words).

Label cleaning (HuthLab convention): words are lower-cased; phones have their ARPAbet stress
digits stripped and are upper-cased; labels that, with braces and whitespace stripped, are one of
``FILLERS`` (case-insensitive) or empty are dropped (for phones also ``sil``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from core.data.base import Events
from core.errors import DataError

#: Non-speech / bookkeeping labels dropped from both tiers (HuthLab ``bad_words``).
FILLERS = frozenset({"sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp"})
#: Extra phone-tier silence label of the Penn forced aligner, dropped from phones only.
PHONE_SILENCES = frozenset({"sil"})
PHONE_NAMES = ("phone", "phones")
WORD_NAMES = ("word", "words")
CHRONOLOGICAL_HEADER = "Praat chronological TextGrid text file"

_TOKEN = re.compile(r"""
    "(?P<str>(?:[^"]|"")*)"                              # string, "" escapes a quote
  | (?P<comment>![^\n]*)                                 # chronological-format comment
  | \[\s*\d*\s*\]                                        # index such as [1] or []
  | <(?P<flag>\w+)>                                      # <exists> / <absent>
  | [A-Za-z_][\w?]*                                      # label such as xmin, intervals, tiers?
  | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)  # number
  | \S                                                   # punctuation (= : etc.)
""", re.VERBOSE)


@dataclass(frozen=True)
class Tier:
    """One tier: ``cls`` "IntervalTier" or "TextTier"; ``items`` (start_s, end_s, text) tuples
    (a TextTier point has start == end)."""

    name: str
    cls: str
    items: tuple


def decode_text(raw: bytes) -> str:
    """Decode TextGrid bytes: UTF-16/UTF-8 BOMs honoured, else UTF-8, else Latin-1."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="replace")
    if raw[:2].count(0) == 1:  # UTF-16 without BOM (first char ASCII)
        return raw.decode("utf-16-le" if raw[1] == 0 else "utf-16-be")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Cursor:
    def __init__(self, text: str, source: str):
        self.source = source
        self.toks = []
        for m in _TOKEN.finditer(text):
            if m.group("str") is not None:
                self.toks.append(("str", m.group("str").replace('""', '"')))
            elif m.group("num") is not None:
                self.toks.append(("num", m.group("num")))
            elif m.group("flag") is not None:
                self.toks.append(("flag", m.group("flag")))
        self.i = 0

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def peek(self) -> Optional[str]:
        return None if self.done() else self.toks[self.i][0]

    def _take(self, kind: str, what: str):
        if self.done():
            raise DataError(f"TextGrid {self.source} ends early (expected {what}); the file is "
                            "truncated — re-download or re-export it from Praat")
        k, v = self.toks[self.i]
        if k != kind:
            raise DataError(f"TextGrid {self.source} is malformed: expected {what}, found {v!r}; "
                            "re-export it from Praat (text format)")
        self.i += 1
        return v

    def num(self, what: str = "a number") -> float:
        return float(self._take("num", what))

    def count(self, what: str) -> int:
        v = self.num(what)
        if v < 0 or v != int(v):
            raise DataError(f"TextGrid {self.source} is malformed: {what} is {v}")
        return int(v)

    def string(self, what: str = "a string") -> str:
        return self._take("str", what)

    def skip_flags(self) -> Optional[str]:
        flag = None
        while self.peek() == "flag":
            flag = self._take("flag", "a flag")
        return flag


def parse_textgrid(text: str, source: str = "<text>") -> list:
    """Parse TextGrid ``text`` (any of the three formats) into a list of :class:`Tier`.

    ``source`` names the file in error messages.
    """
    cur = _Cursor(text, source)
    if cur.peek() != "str":
        raise DataError(f"{source} is not a Praat TextGrid (no 'File type' header); "
                        "export it from Praat as a text file")
    head = cur.string()
    if head == CHRONOLOGICAL_HEADER:
        return _parse_chronological(cur)
    if not head.startswith("ooTextFile"):
        raise DataError(f"{source} is not a Praat text file (header {head!r}); "
                        "export it from Praat as a text file")
    cls = cur.string("the object class")
    if cls != "TextGrid":
        raise DataError(f"{source} holds a Praat {cls!r}, not a TextGrid")
    cur.num("xmin"), cur.num("xmax")
    if cur.skip_flags() == "absent":
        return []
    tiers = []
    for _ in range(cur.count("the number of tiers")):
        tcls, name = cur.string("a tier class"), cur.string("a tier name")
        cur.num("tier xmin"), cur.num("tier xmax")
        n = cur.count("the number of intervals")
        if tcls == "IntervalTier":
            items = tuple((cur.num(), cur.num(), cur.string("an interval label")) for _ in range(n))
        elif tcls == "TextTier":
            items = tuple((t, t, cur.string("a point label"))
                          for t in (cur.num() for _ in range(n)))
        else:
            raise DataError(f"TextGrid {source} has a tier of unknown class {tcls!r}")
        tiers.append(Tier(name, tcls, items))
    return tiers


def _parse_chronological(cur: _Cursor) -> list:
    cur.num("xmin"), cur.num("xmax")
    cur.skip_flags()
    heads = []
    for _ in range(cur.count("the number of tiers")):
        heads.append((cur.string("a tier class"), cur.string("a tier name")))
        cur.num("tier xmin"), cur.num("tier xmax")
    items = [[] for _ in heads]
    while not cur.done():
        k = cur.count("a tier number")
        if not 1 <= k <= len(heads):
            raise DataError(f"TextGrid {cur.source} refers to tier {k} of {len(heads)}")
        if heads[k - 1][0] == "IntervalTier":
            items[k - 1].append((cur.num(), cur.num(), cur.string("an interval label")))
        else:
            t = cur.num()
            items[k - 1].append((t, t, cur.string("a point label")))
    return [Tier(name, cls, tuple(it)) for (cls, name), it in zip(heads, items)]


# -- files, tier choice, labels ---------------------------------------------------------------
_CACHE_SIZE = 16
_cache: "OrderedDict[tuple, list]" = OrderedDict()


def read_tiers(path: Path) -> list:
    """Parse the TextGrid file at ``path`` (small in-process LRU cache by path/size/mtime)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"TextGrid {path} does not exist; download it or remove the story") from None
    if st.st_size == 0:
        raise DataError(f"TextGrid {path} is empty (0 bytes); re-download it")
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    tiers = parse_textgrid(decode_text(path.read_bytes()), source=str(path))
    _cache[key] = tiers
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return tiers


def _choose(tiers: list, names: tuple, other_names: tuple, position: int) -> Optional[Tier]:
    """The IntervalTier named like ``names``; else the one at ``position`` among IntervalTiers,
    unless that one is named like ``other_names`` (it then belongs to the other role)."""
    itiers = [t for t in tiers if t.cls == "IntervalTier"]
    for t in itiers:
        if t.name.strip().lower() in names:
            return t
    if position < len(itiers) and itiers[position].name.strip().lower() not in other_names:
        return itiers[position]
    return None


def _bare(label: str) -> str:
    return label.strip().strip("{}").strip().lower()


def clean_word(label: str) -> Optional[str]:
    """Lower-cased word label, or None when it is empty or a filler."""
    bare = _bare(label)
    if not bare or bare in FILLERS:
        return None
    return label.strip().lower()


def clean_phone(label: str) -> Optional[str]:
    """Upper-cased ARPAbet phone with stress digits stripped, or None for empty/filler/silence."""
    bare = _bare(label).rstrip("0123456789")
    if not bare or bare in FILLERS or bare in PHONE_SILENCES:
        return None
    return label.strip().rstrip("0123456789").upper()


def _events(tier: Tier, clean) -> Events:
    kept = [(a, b, c) for a, b, lab in tier.items if (c := clean(lab)) is not None]
    kept.sort(key=lambda e: (e[0], e[1]))
    return Events(labels=[c for _, _, c in kept],
                  onsets=np.array([a for a, _, _ in kept], dtype=np.float64),
                  offsets=np.array([b for _, b, _ in kept], dtype=np.float64))


def read_words(path: Path) -> Events:
    """Word events of the TextGrid at ``path`` (cleaned, sorted by onset; seconds).

    Raises DataError when the file has no word tier (no IntervalTier named word/words and fewer
    than two IntervalTiers).
    """
    return _read_tier(path, "word", WORD_NAMES, PHONE_NAMES, 1, clean_word)


def read_phones(path: Path) -> Events:
    """Phone events of the TextGrid at ``path`` (cleaned, sorted by onset; seconds)."""
    return _read_tier(path, "phone", PHONE_NAMES, WORD_NAMES, 0, clean_phone)


def _read_tier(path: Path, kind: str, names, other_names, position: int, clean) -> Events:
    """Events of the ``kind`` tier: by name when present, else the tier at ``position``."""
    tiers = read_tiers(path)
    tier = _choose(tiers, names, other_names, position)
    if tier is None:
        nth = ("first", "second")[position]
        raise DataError(f"TextGrid {path} has no {kind} tier (tiers: {[t.name for t in tiers]}); "
                        f"it needs an IntervalTier named '{kind}' or a {nth} IntervalTier")
    return _events(tier, clean)
