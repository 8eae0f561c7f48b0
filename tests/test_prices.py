"""The shipped price table is complete and dated; a user's table overrides and extends it; bad tables name the file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from quicktrain import prices
from quicktrain.errors import UserError

ROW = """
["{name}"]
on_demand_usd_per_hour = {on_demand}
spot_usd_per_hour = 0.5
provider = "test"
region = "here"
description = "a box"
source = "https://example.com/pricing"
date = "2025-01"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_shipped_table_is_complete_and_dated() -> None:
    table = prices.load_prices()
    assert prices.DEFAULT_INSTANCE in table
    for name in ("c7a.large", "c7a.xlarge", "m7i.large", "g4dn.xlarge", "g5.xlarge", "g6.xlarge", "p3.2xlarge",
                 "p4d.24xlarge", "p5.48xlarge", "n2-standard-2", "a2-highgpu-1g", "a3-highgpu-8g", "gpu_1x_a100",
                 "gpu_1x_h100_pcie"):
        assert name in table
    for name, price in table.items():
        assert price.instance == name
        for f in dataclasses.fields(price):
            if f.name != "note":
                assert getattr(price, f.name) not in ("", None), (name, f.name)
        assert re.fullmatch(r"\d{4}-\d{2}", price.date), name
        assert price.source.startswith("https://")
        assert 0 < price.spot <= price.on_demand
        if price.spot != price.on_demand:
            assert "not a quote" in price.note, name  # spot prices move; the table says so


def test_lookup_and_suggestion() -> None:
    table = prices.load_prices()
    assert prices.lookup("g5.xlarge", table).on_demand > 0
    with pytest.raises(UserError) as info:
        prices.lookup("g5.xlarg", table)
    assert str(info.value) == ("unknown instance 'g5.xlarg' (not in the price table; did you mean 'g5.xlarge'? "
                               "add it with --prices FILE)")


def test_user_table_overrides_and_extends(tmp_path: Path) -> None:
    path = _write(tmp_path, ROW.format(name="c7a.large", on_demand=9.0) + ROW.format(name="my-box", on_demand=2))
    shipped = prices.load_prices()
    table = prices.load_prices(path)
    assert table["c7a.large"].on_demand == 9.0 and table["c7a.large"].provider == "test"
    assert table["my-box"].on_demand == 2.0 and table["my-box"].date == "2025-01"
    assert table["g5.xlarge"] == shipped["g5.xlarge"]
    assert len(table) == len(shipped) + 1


def test_user_table_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUICKTRAIN_PRICES", str(_write(tmp_path, ROW.format(name="env-box", on_demand=1))))
    assert "env-box" in prices.load_prices()


@pytest.mark.parametrize("text,expected", [
    ("this is = = not toml", "not a valid TOML price table"),
    (ROW.format(name="b", on_demand=1).replace('region = "here"\n', ""), "row 'b': missing field 'region'"),
    (ROW.format(name="b", on_demand=-1), "row 'b': field 'on_demand_usd_per_hour' must be a number"),
    (ROW.format(name="b", on_demand='"cheap"'), "row 'b': field 'on_demand_usd_per_hour' must be a number"),
    (ROW.format(name="b", on_demand=1).replace('"2025-01"', '"January"'), "row 'b': field 'date' must be YYYY-MM"),
    (ROW.format(name="b", on_demand=1) + "colour = 'red'\n", "row 'b': unknown field 'colour'"),
    ("b = 3\n", "row 'b' is not a table"),
])
def test_bad_user_table(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        prices.load_prices(path)
    message = str(info.value)
    assert message.startswith(f"price file {path}: ") and expected in message and "\n" not in message


def test_missing_user_table(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape(f"price file {tmp_path / 'nope.toml'}: not found")):
        prices.load_prices(tmp_path / "nope.toml")


def test_cost_arithmetic() -> None:
    price = dataclasses.replace(prices.load_prices()["c7a.large"], on_demand=1.0, spot=0.25)
    assert prices.cost_usd(3600, price) == (1.0, 0.25)
    assert prices.cost_usd(90, price) == pytest.approx((0.025, 0.00625))
