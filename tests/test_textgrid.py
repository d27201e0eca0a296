"""TextGrid reader: the three Praat text formats, encodings, tier choice, label cleaning, errors."""


import numpy as np
import pytest

from core.data.layout import fill_gaps, write_textgrid
from core.data.textgrid import (clean_phone, clean_word, parse_textgrid, read_phones, read_tiers,
                                read_words)
from core.errors import DataError
from ds_fixture import clean_events, synth_transcript, write_textgrid_short

XMAX = 30.0


@pytest.fixture(scope="module")
def transcript():
    return synth_transcript(np.random.default_rng(3), XMAX)


def _chronological(phones, words, xmax, names=("phone", "word")) -> str:
    """Praat's chronological format, written by hand from its documented layout."""
    out = ['"Praat chronological TextGrid text file"', f"0 {xmax}   ! Time domain.",
           "2   ! Number of tiers."]
    out += [f'"IntervalTier" "{n}" 0 {xmax}' for n in names]
    entries = [(a, k, b, lab) for k, ev in ((1, phones), (2, words)) for a, b, lab in fill_gaps(ev, xmax)]
    for a, k, b, lab in sorted(entries):
        out += ["", f"! {names[k - 1]}:", f"{k} {a} {b}", f'"{lab}"']
    return "\n".join(out) + "\n"


def _same(ev, ref):
    assert ev.labels == ref.labels
    np.testing.assert_allclose(ev.onsets, ref.onsets, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ev.offsets, ref.offsets, rtol=0, atol=1e-9)


def test_all_formats_and_encodings_give_the_same_events(tmp_path, transcript):
    words, phones = transcript
    ref_w, ref_p = clean_events(words, clean_word), clean_events(phones, clean_phone)
    assert len(ref_w) > 5 and len(ref_p) > len(ref_w)
    raw = {lab for *_, lab in words}
    assert {"sp", "{BR}", "sentence_start"} <= raw and any(lab[:1].isupper() for lab in raw)
    assert any(lab[-1].isdigit() for *_, lab in phones) and "sil" in {lab for *_, lab in phones}
    paths = {}
    paths["long"] = tmp_path / "long.TextGrid"
    write_textgrid(paths["long"], phones, words, XMAX)
    paths["crlf"] = tmp_path / "crlf.TextGrid"
    write_textgrid(paths["crlf"], phones, words, XMAX, crlf=True)
    assert b"\r\n" in paths["crlf"].read_bytes()
    paths["short"] = tmp_path / "short.TextGrid"
    write_textgrid_short(paths["short"], phones, words, XMAX)
    paths["chrono"] = tmp_path / "chrono.TextGrid"
    paths["chrono"].write_text(_chronological(phones, words, XMAX))
    text = paths["crlf"].read_bytes().decode("utf-8")
    paths["utf16"] = tmp_path / "utf16.TextGrid"
    paths["utf16"].write_bytes(text.encode("utf-16"))  # with BOM, as Praat writes it
    paths["utf8bom"] = tmp_path / "utf8bom.TextGrid"
    paths["utf8bom"].write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    paths["unnamed"] = tmp_path / "unnamed.TextGrid"
    write_textgrid(paths["unnamed"], phones, words, XMAX, tier_names=("", ""))
    for name, p in paths.items():
        _same(read_words(p), ref_w)
        _same(read_phones(p), ref_p)


def test_label_cleaning():
    assert clean_word("Hello") == "hello"
    assert clean_word(" it's ") == "it's"
    for filler in ("sp", "{SP}", " {BR} ", "{lg}", "sentence_start", "Sentence_End", "ls", "ns",
                   "", "   "):
        assert clean_word(filler) is None, filler
    assert clean_phone("ah0") == "AH"
    assert clean_phone("ER1 ") == "ER"
    assert clean_phone("NG") == "NG"
    for filler in ("sp", "sil", "SIL", "{NS}", "", " "):
        assert clean_phone(filler) is None, filler


def test_tier_choice_by_name_beats_position(tmp_path):
    # word tier first, named "WORDS"; phone tier second, named "Phones"
    words = [(0.5, 1.0, "Hi")]
    phones = [(0.5, 0.7, "HH"), (0.7, 1.0, "AY1")]
    p = tmp_path / "swapped.TextGrid"
    write_textgrid(p, words, phones, 2.0, tier_names=("WORDS", "Phones"))
    assert read_words(p).labels == ["hi"]
    assert read_phones(p).labels == ["HH", "AY"]
    np.testing.assert_allclose(read_phones(p).onsets, [0.5, 0.7])


def test_text_tiers_are_skipped_and_quotes_unescaped():
    lines = ['File type = "ooTextFile short"', '"TextGrid"', "0", "3", "<exists>", "3",
             '"TextTier"', '"bell"', "0", "3", "1", "1.5", '"ding"',
             '"IntervalTier"', '"phone"', "0", "3", "1", "0", "3", '"AH0"',
             '"IntervalTier"', '"word"', "0", "3", "2", "0", "1", '"say ""hi"""', "1", "3", '""']
    text = "\n".join(lines) + "\n"
    tiers = parse_textgrid(text, "mem")
    assert [t.cls for t in tiers] == ["TextTier", "IntervalTier", "IntervalTier"]
    assert tiers[0].items == ((1.5, 1.5, "ding"),)
    assert tiers[2].items[0] == (0.0, 1.0, 'say "hi"')


def test_no_word_tier_is_a_data_error_naming_the_file(tmp_path):
    p = tmp_path / "one_tier.TextGrid"
    p.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n2\n<exists>\n1\n'
                 '"IntervalTier"\n"phone"\n0\n2\n1\n0\n2\n"AH"\n')
    assert read_phones(p).labels == ["AH"]
    with pytest.raises(DataError, match=r"one_tier\.TextGrid.*no word tier"):
        read_words(p)
    q = tmp_path / "absent.TextGrid"
    q.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n2\n<absent>\n')
    with pytest.raises(DataError, match=r"absent\.TextGrid.*no word tier"):
        read_words(q)


@pytest.mark.parametrize("body, pattern", [
    ("", r"empty"),
    ("hello world\n", r"not a Praat TextGrid"),
    ('"ooTextFile"\n"Pitch"\n0\n1\n', r"Pitch"),
    ('File type = "ooTextFile"\nObject class = "TextGrid"\n0\n2\n<exists>\n2\n"IntervalTier"\n"p"\n0\n2\n3\n0\n1\n"a"\n',
     r"ends early"),
    ('File type = "ooTextFile"\nObject class = "TextGrid"\n0\n2\n<exists>\n1\n"IntervalTier"\n"p"\n0\n2\n1\n0\n"oops"\n"a"\n',
     r"malformed"),
])
def test_malformed_files_are_data_errors_naming_the_file(tmp_path, body, pattern):
    p = tmp_path / "bad.TextGrid"
    p.write_text(body)
    with pytest.raises(DataError, match=pattern) as err:
        read_tiers(p)
    assert "bad.TextGrid" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.TextGrid does not exist"):
        read_words(tmp_path / "nothere.TextGrid")


def test_cache_sees_rewritten_file(tmp_path):
    p = tmp_path / "g.TextGrid"
    write_textgrid(p, [(0.0, 1.0, "AH")], [(0.0, 1.0, "a")], 2.0)
    assert read_words(p).labels == ["a"]
    write_textgrid(p, [(0.0, 1.0, "AH")], [(0.0, 1.0, "bb"), (1.0, 1.5, "cc")], 2.0)
    assert read_words(p).labels == ["bb", "cc"]
