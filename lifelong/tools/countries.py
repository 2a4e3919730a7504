"""The countries tool: a country's capital, region or currency, from the installed `countryinfo` data
(lifelong/data/sources/countries.py: pycountry's short English names, ISO 4217 currency names).

    <call>countries: capital(France)</call>    ->  Paris
    <call>countries: region(Japan)</call>      ->  Asia
    <call>countries: currency(Japan)</call>    ->  Yen

The country is matched by name, case and spacing aside; everything inside the parentheses is the name
("Congo, The Democratic Republic of the"). An unknown country, or a fact the data does not have
(Antarctica's capital), is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from lifelong.data.sources.countries import Country, countries, currency_name
from lifelong.tools.base import Deadline, Refused, function_call

# function name -> the fact of a country it returns (None: the data has none)
FACTS: dict[str, Callable[[Country], str | None]] = {
    "capital": lambda c: c.capital,
    "region": lambda c: c.region,
    "currency": lambda c: currency_name(c.currencies[0]) if c.currencies else None,
}
FUNCTIONS = dict.fromkeys(FACTS, 1)  # each takes one argument: the country's name


def run(args: str, deadline: Deadline) -> str:
    """The fact `capital`, `region` or `currency` of the named country."""
    name, (country_name,) = function_call(args, FUNCTIONS)
    country = by_name().get(name_key(country_name))
    if country is None:
        raise Refused(f"unknown country {country_name[:60]!r}")
    fact = FACTS[name](country)
    if fact is None:
        raise Refused(f"no {name} known for {country.name}")
    return fact


def name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


@lru_cache(maxsize=1)
def by_name() -> dict[str, Country]:
    return {name_key(c.name): c for c in countries()}
