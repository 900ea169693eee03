"""Bringing one's own data: transaction logs, missing values, exact ids, sampling weights, clear file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eoca.data import Dataset
from eoca.data.importer import import_dataset
from eoca.errors import ConfigError, DataValidationError

LOG = """\
 00004 1 19970101  2   29.33
 00004 1 19970118  2   29.73
 00004 1 19970118  1   10.00
 00004 1 19970802  1   14.96
 00018 2 19970101  2   52.00
 00021 3 19970115  1   10.00
 00021 3 19971020  3   60.00
 00021 3 19971101  1   15.00
 00099 4 19971201  1   99.00
 00007 5 19970301  1    5.00
 00007 5 19970305  1    5.00
 00007 5 19970320  1    8.00
"""

TX_SPEC = """\
name: log
transactions:
  path: purchases.txt
  delimiter: whitespace
  header: false
  columns: [customer_id, customer_index, date, quantity, amount]
  customer_id: customer_id
  time: date
  time_format: "%Y%m%d"
  amount: amount
  quantity: quantity
  window: {calibration_end: 1997-09-30, target_end: 1998-06-30}
split: {test_fraction: 0.25, validation_fraction: 0.0, seed: 0}
"""


def _write(tmp: Path, name: str, text: str | bytes) -> Path:
    p = tmp / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def _customer(ds: Dataset, cid: str) -> dict[str, object]:
    rows = ds.customers.to_pylist()
    return next(r for r in rows if r["customer_id"] == cid)


def test_transaction_log_builds_customer_value_table(tmp_path: Path) -> None:
    _write(tmp_path, "purchases.txt", LOG)
    spec = _write(tmp_path, "spec.yaml", TX_SPEC)
    ds = import_dataset(spec, tmp_path / "out")
    ids = ds.customers.column("customer_id").to_pylist()
    assert ids == ["00004", "00018", "00021", "00007"], "ids kept as written; 00099 first buys after the window"
    c4 = _customer(ds, "00004")
    # occasions: Jan 1 (29.33), Jan 18 (39.73), Aug 2 (14.96); calibration_end Sep 30 = day 272 of 1997
    assert c4["frequency"] == 2 and c4["recency"] == 213 and c4["T"] == 272 and c4["days_since_last"] == 59
    assert c4["n_transactions"] == 4 and c4["monetary_total"] == pytest.approx(84.02)
    assert c4["monetary_mean"] == pytest.approx(84.02 / 3) and c4["monetary_max"] == pytest.approx(39.73)
    assert c4["monetary_first"] == pytest.approx(29.33)
    assert c4["monetary_repeat_mean"] == pytest.approx((39.73 + 14.96) / 2)
    assert (c4["ipt_mean"], c4["ipt_min"], c4["ipt_max"]) == (106.5, 17, 196)
    assert c4["ipt_std"] == pytest.approx(np.std([17, 196], ddof=1))
    assert c4["quantity_total"] == 6 and c4["quantity_max"] == 2
    # Trend: Aug 2 is 59 days before Sep 30, Jan 18 is 255 days before.
    assert (c4["occasions_last_30"], c4["occasions_last_90"], c4["occasions_last_180"]) == (0, 1, 1)
    assert c4["spend_last_90"] == pytest.approx(14.96) and c4["spend_last_30"] == 0
    c18 = _customer(ds, "00018")
    assert c18["frequency"] == 0 and c18["ipt_mean_missing"] == 1.0, "one-time buyer: gaps missing, indicated"
    amounts = dict(
        zip(ds.exposures.column("customer_id").to_pylist(), ds.exposures.column("amount").to_pylist(), strict=True)
    )
    assert amounts == {"00004": 0.0, "00018": 0.0, "00021": 75.0, "00007": 0.0}
    assert ds.spec.notes["target_days"] == "273"
    assert "1 customers whose first purchase falls in the target window" in ds.spec.notes["transactions_not_used"]
    back = Dataset.load(tmp_path / "out")
    assert back.customers.column("customer_id").to_pylist() == ids, "ids survive the Parquet round trip"


def test_transaction_csv_with_items(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "log.csv",
        "cust;day;value;sku\nA;2024-01-05;10;book\nA;2024-02-01;5;cd\nB;2024-03-01;7;book\nB;2024-08-01;3;cd\n",
    )
    spec = _write(
        tmp_path,
        "spec.yaml",
        "name: items\ntransactions: {path: log.csv, delimiter: ';', customer_id: cust, time: day, amount: value,"
        " item: sku, window: {calibration_end: 2024-06-30, target_end: 2024-12-31}}\n"
        "split: {test_fraction: 0.5, validation_fraction: 0.0, seed: 2}\n",
    )
    ds = import_dataset(spec)
    a = _customer(ds, "A")
    assert (a["n_items"], a["item_book"], a["item_cd"]) == (2, 1, 1)
    assert ds.exposures.column("amount").to_pylist() == [0.0, 3.0]


def test_missing_value_policies_and_all_problems_at_once(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "resp.csv",
        "id,gift,conv,age,income,region\n"
        "001,10,1,30,,north\n002,,0,,50,\n003,20,1,50,70,south\n004,0,0,40,90,north\n005,,0,60,,south\n",
    )
    base = (
        "name: resp\nsplit: {test_fraction: 0.2, validation_fraction: 0.0, seed: 1}\n"
        "customer_value:\n  path: resp.csv\n  customer_id: id\n  amount: gift\n  converted: conv\n  features:\n"
    )
    spec = _write(
        tmp_path,
        "spec.yaml",
        base + "    - {name: age, type: numeric}\n    - {name: income, type: numeric, fill_value: -1}\n"
        "    - {name: region, type: categorical}\n",
    )
    ds = import_dataset(spec)
    cust = ds.customers
    assert cust.column("customer_id").to_pylist() == ["001", "002", "003", "004", "005"]
    assert cust.column("age").to_pylist()[1] == pytest.approx(45.0), "training mean of 30, 50, 40, 60"
    assert cust.column("age_missing").to_pylist() == [0, 1, 0, 0, 0]
    assert cust.column("income").to_pylist() == [-1, 50, 70, 90, -1] and "income_missing" not in cust.column_names
    assert cust.column("region").to_pylist()[1] == "(missing)"
    assert ds.exposures.column("amount").to_pylist() == [10, 0, 20, 0, 0], "blank amount of a non-converter is 0"

    # Two problems in two columns (a blank label of a converter; a missing value under `error`) in one run.
    _write(tmp_path, "resp.csv", (tmp_path / "resp.csv").read_text().replace("003,20,1", "003,,1"))
    strict = _write(tmp_path, "strict.yaml", base + "    - {name: age, type: numeric, missing: error}\n")
    with pytest.raises(DataValidationError) as err:
        import_dataset(strict)
    msg = str(err.value)
    assert "2 problems" in msg
    assert "column 'gift' (amount): blank where 'conv' is 1" in msg and "first at row 2" in msg
    assert "column 'age' (feature 'age'): 1 missing value(s), first at row 1" in msg


def test_integer_ids_only_when_declared(tmp_path: Path) -> None:
    _write(tmp_path, "t.csv", "id,spend\n00014974,5\n00000002,0\n")
    text = "name: t\nsplit: {test_fraction: 0.5, validation_fraction: 0.0, seed: 1}\n"
    text += "customer_value: {path: t.csv, customer_id: id, amount: spend}\n"
    spec = _write(tmp_path, "s.yaml", text)
    assert import_dataset(spec).customers.column("customer_id").to_pylist() == ["00014974", "00000002"]
    spec = _write(tmp_path, "s.yaml", text + "id_type: integer\n")
    assert import_dataset(spec).customers.column("customer_id").to_pylist() == [14974, 2]


def test_sampling_rate_and_weight_column(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{10 if i % 2 else 0},{i % 2},{i}" for i in range(40))
    _write(tmp_path, "d.csv", "id,gift,conv,w\n" + rows + "\n")
    head = "name: d\nsplit: {test_fraction: 0.3, validation_fraction: 0.1, seed: 0}\n"
    spec = _write(
        tmp_path,
        "s.yaml",
        head + "sampling: {converted_rate: 0.05}\n"
        "customer_value: {path: d.csv, customer_id: id, amount: gift, converted: conv}\n",
    )
    ds = import_dataset(spec)
    w = np.asarray(ds.exposures.column("weight").to_numpy())
    conv = np.asarray(ds.exposures.column("converted").to_numpy())
    assert np.average(conv, weights=w) == pytest.approx(0.05), "weights restore the population rate"
    assert "oversampled design" in ds.spec.notes["sampling"]
    cv = "customer_value: {path: d.csv, customer_id: id, amount: gift, weight: w}\n"
    spec = _write(tmp_path, "s.yaml", head + cv)
    assert import_dataset(spec).exposures.column("weight").to_pylist()[:3] == [0, 1, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"id,spend,spend\n1,2,3\n", r"column\(s\) \['spend'\] appear more than once in the header"),
        (b"id,spend\n1,2\n2,3\n3,caf\xe9\n", r"line 4, column 'spend': bytes e9 are not UTF-8"),
        (b"id,spend\n", r"the table is empty"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    _write(tmp_path, "f.csv", content)
    spec = _write(tmp_path, "s.yaml", "name: f\ncustomer_value: {path: f.csv, customer_id: id, amount: spend}\n")
    with pytest.raises(DataValidationError, match=r"f.csv: " + message):
        import_dataset(spec)


def test_split_without_training_rows_fails_at_import(tmp_path: Path) -> None:
    _write(tmp_path, "f.csv", "id,spend\n1,2\n2,0\n")
    spec = _write(
        tmp_path,
        "s.yaml",
        "name: f\nsplit: {test_fraction: 0.99, validation_fraction: 0.9, seed: 0}\n"
        "customer_value: {path: f.csv, customer_id: id, amount: spend}\n",
    )
    with pytest.raises(DataValidationError, match=r"leaves no training exposures"):
        import_dataset(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_trend_windows_are_configurable_and_positive(tmp_path: Path) -> None:
    _write(tmp_path, "purchases.txt", LOG)
    spec = _write(tmp_path, "spec.yaml", TX_SPEC.replace("  quantity: quantity\n", "  recent_windows: [60]\n"))
    ds = import_dataset(spec, tmp_path / "out")
    trend = [c for c in ds.customers.column_names if c.startswith(("occasions_last", "spend_last"))]
    assert trend == ["occasions_last_60", "spend_last_60"]
    assert _customer(ds, "00004")["occasions_last_60"] == 1
    bad = _write(tmp_path, "bad.yaml", TX_SPEC.replace("  quantity: quantity\n", "  recent_windows: [0]\n"))
    with pytest.raises(ConfigError, match="recent_windows"):
        import_dataset(bad, tmp_path / "out2")
