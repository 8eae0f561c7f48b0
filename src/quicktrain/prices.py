"""Instance prices, so a run can report what its training time cost (on-demand and spot) on a named cloud instance.

The shipped table is `quicktrain/prices.toml`; every row carries the pricing page it came from and the month the figure
was valid, and the report prints that date beside every dollar figure. Prices change: a table of your own, given with
`--prices FILE` (or the environment variable QUICKTRAIN_PRICES), is merged over the shipped one; its rows replace
shipped rows of the same name and add new ones. Each row in it is a TOML table named by the instance, with every field:

    ["my-box"]                         # the instance name, as given to --instance (quote names with dots)
    on_demand_usd_per_hour = 1.20      # US dollars per hour, >= 0
    spot_usd_per_hour = 0.45           # same; use the on-demand price where there is no spot market
    provider = "aws"                   # free text, e.g. aws, gcp, lambda, on-prem
    region = "us-east-1"
    description = "1x NVIDIA L4 24 GB, 4 vCPU, 16 GiB"
    source = "https://aws.amazon.com/ec2/pricing/on-demand/"   # where the figure came from
    date = "2025-03"                   # when the figure was valid: YYYY-MM or YYYY-MM-DD
    note = "spot is a typical figure"  # optional

A row must be complete: a row that replaced only the price would keep the old row's date and source, which would then
describe a different figure.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from quicktrain.errors import UserError

DEFAULT_INSTANCE = "c7a.large"  # 2 vCPU AMD EPYC Genoa (Zen 4): the closest cloud match to the 2-core Zen 4 dev machine

_NUMBERS = {"on_demand_usd_per_hour": "on_demand", "spot_usd_per_hour": "spot"}
_STRINGS = ("provider", "region", "description", "source", "date")
_OPTIONAL = ("note",)
_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])(-\d{2})?")


@dataclass(frozen=True)
class Price:
    instance: str
    on_demand: float  # US dollars per hour
    spot: float  # US dollars per hour; equal to on_demand where the provider has no spot market
    provider: str
    region: str
    description: str  # the hardware: GPU or CPU, vCPUs, memory
    source: str  # URL of the provider's pricing page
    date: str  # YYYY-MM: when the figure was valid
    note: str = ""


def _row(name: str, row: Any, where: str) -> Price:
    """Check one TOML table and turn it into a Price; UserError naming the file, row and field if it is bad."""
    at = f"{where}: row {name!r}"
    if not isinstance(row, dict):
        raise UserError(f"{at} is not a table; write it as [\"{name}\"] followed by its fields")
    for key in row:
        if key not in _NUMBERS and key not in _STRINGS and key not in _OPTIONAL:
            raise UserError(f"{at}: unknown field {key!r} (fields: {', '.join([*_NUMBERS, *_STRINGS, *_OPTIONAL])})")
    values: dict[str, Any] = {}
    for key, attr in _NUMBERS.items():
        value = row.get(key)
        if value is None:
            raise UserError(f"{at}: missing field {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserError(f"{at}: field {key!r} must be a number of dollars per hour >= 0, got {value!r}")
        values[attr] = float(value)
    for key in (*_STRINGS, *_OPTIONAL):
        value = row.get(key, "" if key in _OPTIONAL else None)
        if value is None:
            raise UserError(f"{at}: missing field {key!r}")
        if not isinstance(value, str):
            raise UserError(f"{at}: field {key!r} must be a string, got {value!r}")
        values[key] = value
    if not _DATE.fullmatch(values["date"]):
        raise UserError(f"{at}: field 'date' must be YYYY-MM (when the price was valid), got {values['date']!r}")
    return Price(instance=name, **values)


def _parse(text: str, where: str) -> dict[str, Price]:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where}: not a valid TOML price table ({' '.join(str(e).split())})") from None
    return {name: _row(name, row, where) for name, row in table.items()}


def _read_user_file(path: str | os.PathLike[str]) -> dict[str, Price]:
    where = f"price file {os.fspath(path)}"
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{where}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{where}: cannot be read ({e.__class__.__name__}: {' '.join(str(e).split())})") from None
    return _parse(text, where)


def load_prices(path: str | os.PathLike[str] | None = None) -> dict[str, Price]:
    """The shipped table with the user's table merged over it (user rows win). The user's table is `path` if given,
    else $QUICKTRAIN_PRICES if set and non-empty, else none."""
    shipped = resources.files("quicktrain").joinpath("prices.toml").read_text(encoding="utf-8")
    prices = _parse(shipped, "shipped price table quicktrain/prices.toml")
    user = path if path is not None else os.environ.get("QUICKTRAIN_PRICES") or None
    if user is not None:
        prices.update(_read_user_file(user))
    return prices


def lookup(instance: str, prices: dict[str, Price]) -> Price:
    """The row for `instance`; a one-line UserError with the closest name if there is none."""
    if instance in prices:
        return prices[instance]
    close = difflib.get_close_matches(instance, list(prices), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown instance {instance!r} (not in the price table; {hint}add it with --prices FILE)")


def cost_usd(seconds: float, price: Price) -> tuple[float, float]:
    """(on-demand, spot) dollars for `seconds` of the instance, billed pro rata (AWS and GCP bill per second after a
    one-minute minimum, which a single run's report deliberately ignores: it prices the compute, not the invoice)."""
    hours = seconds / 3600.0
    return hours * price.on_demand, hours * price.spot
