"""Country facts from the PyPI packages `countryinfo` (capital, region, currencies, languages, borders)
and `pycountry` (ISO 3166 names and their translations in ~160 languages).

`countryinfo` keeps one JSON file per country in its `data/` directory (read directly, a few are
duplicates under two file names: the most complete one is kept). Country names are pycountry's
short English names ("South Korea", "Vietnam"), so they are the keys of `country_names(lang)`.
"""

from __future__ import annotations

import gettext
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from lifelong.data.sources.base import SourceBroken, missing
from lifelong.errors import UserError

COUNTRYINFO = "countryinfo"  # the package whose data/ directory holds the JSON files


@dataclass(frozen=True)
class Country:
    name: str
    iso2: str  # ISO 3166-1 alpha-2, e.g. "FR"
    iso3: str  # alpha-3, e.g. "FRA"
    capital: str | None
    region: str | None  # e.g. "Europe"
    subregion: str | None  # e.g. "Western Europe"
    currencies: tuple[str, ...]  # ISO 4217 codes, e.g. ("EUR",)
    languages: tuple[str, ...]  # ISO 639-1 codes, e.g. ("fr",)
    borders: tuple[str, ...]  # names of the neighbouring countries


def countries(root: Path | None = None) -> list[Country]:
    """Every current ISO 3166 country or territory, sorted by name. Missing facts are None or ()."""
    return list(_countries(root))


def country_names(lang: str) -> dict[str, str]:
    """English country name -> its name in `lang` (e.g. "de", "fr", "es"), for the names translated."""
    pycountry = _pycountry()
    try:
        catalog = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[lang])
    except OSError:
        raise UserError(f"pycountry has no country names in language {lang!r}") from None
    catalog.add_fallback(_Untranslated())
    names = {}
    for country in pycountry.countries:
        english = _english_name(country)
        if translated := catalog.gettext(english):
            names[english] = translated
    return names


def language_name(code: str) -> str:
    """English name of an ISO 639 language code ("fr" -> "French"); the code itself if unknown."""
    language = _pycountry().languages.get(alpha_2=code) if len(code) == 2 else None
    return language.name if language else code


def currency_name(code: str) -> str:
    """English name of an ISO 4217 currency code ("EUR" -> "Euro"); the code itself if unknown."""
    currency = _pycountry().currencies.get(alpha_3=code)
    return currency.name if currency else code


class _Untranslated(gettext.NullTranslations):
    def gettext(self, message: str) -> str:
        return ""


def _english_name(country: Any) -> str:
    return getattr(country, "common_name", None) or country.name


def _pycountry() -> ModuleType:
    try:
        import pycountry
    except ImportError:
        raise missing("ISO country names (PyPI package pycountry)", "pip install pycountry") from None
    return pycountry


def _countryinfo_data() -> Path:
    spec = importlib.util.find_spec(COUNTRYINFO)
    if spec is None or not spec.submodule_search_locations:
        raise missing("country facts (PyPI package countryinfo)", "pip install countryinfo")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@lru_cache(maxsize=4)
def _countries(root: Path | None) -> tuple[Country, ...]:
    directory = root or _countryinfo_data()
    by_iso3: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        record = _read_json(path)
        iso = record.get("ISO")
        iso3 = iso.get("alpha3") if isinstance(iso, dict) else None
        if not record.get("name") or not iso3:
            continue
        if iso3 not in by_iso3 or _filled(record) > _filled(by_iso3[iso3]):
            by_iso3[iso3] = record
    if not by_iso3:
        raise SourceBroken(f"{directory}: no country JSON files with a name and ISO codes")
    pycountry = _pycountry()
    known = {iso3: pycountry.countries.get(alpha_3=iso3) for iso3 in by_iso3}
    current = {iso3: record for iso3, record in by_iso3.items() if known[iso3]}  # drops former countries
    names = {code: _english_name(known[iso3]) for iso3 in current for code in (iso3, known[iso3].alpha_2)}
    result = [_country(record, iso3, known[iso3].alpha_2, names) for iso3, record in current.items()]
    return tuple(sorted(result, key=lambda c: c.name))


def _country(record: dict[str, Any], iso3: str, iso2: str, names: dict[str, str]) -> Country:
    capital = record.get("capital")
    if isinstance(capital, list):  # one file lists its capital as ["Vatican City"]
        capital = capital[0] if capital else None
    return Country(
        name=names[iso3],
        iso2=iso2,
        iso3=iso3,
        capital=capital or None,
        region=record.get("region") or None,
        subregion=record.get("subregion") or None,
        currencies=tuple(record.get("currencies") or ()),
        languages=tuple(record.get("languages") or ()),
        borders=tuple(names[code] for code in record.get("borders") or () if code in names),  # ISO2 or 3
    )


def _filled(record: dict[str, Any]) -> int:
    return sum(bool(value) for value in record.values())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SourceBroken(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(record, dict):
        raise SourceBroken(f"{path}: not a JSON object")
    return record
