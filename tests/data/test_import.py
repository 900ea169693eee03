"""Import of a user's own files through a YAML mapping spec."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from eoca.data import Dataset
from eoca.data.importer import import_dataset
from eoca.errors import ConfigError, DataValidationError

FIX = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for f in FIX.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_customer_value_table_imports_as_single_item(workdir: Path) -> None:
    src = pacsv.read_csv(workdir / "clv_customers.csv")
    ds = import_dataset(workdir / "clv_spec.yaml", workdir / "out")
    assert ds.n_customers == src.num_rows == 40
    assert ds.n_funds == 1 and ds.funds.column("fund_id").to_pylist() == ["all"]
    assert ds.exposures.num_rows == 40, "every customer row becomes one exposure; none dropped"
    spend = np.asarray(src.column("next_year_spend").to_numpy())
    np.testing.assert_allclose(ds.exposures.column("amount").to_numpy(), spend)
    np.testing.assert_array_equal(ds.exposures.column("converted").to_numpy(), (spend > 0).astype(int))
    back = Dataset.load(workdir / "out")
    assert [f.name for f in back.spec.customers.features] == [
        "channel",
        "tenure_months",
        "orders_last_year",
        "lifetime_spend",
    ]
    labels = back.split_labels()
    assert 0 < (labels == 2).sum() < 40


def test_multi_table_import(workdir: Path) -> None:
    ds = import_dataset(workdir / "tables_spec.yaml", workdir / "out")
    assert (ds.n_customers, ds.n_funds, ds.exposures.num_rows) == (30, 3, 90)
    assert ds.spec.propensity == "logged"
    assert ds.exposures.column("customer_id").to_pylist()[:2] == ["100", "101"], "ids are text unless declared"
    assert set(ds.funds.column_names) == {"fund_id", "risk_level", "annual_return", "category"}
    np.testing.assert_array_equal(np.bincount(Dataset.load(workdir / "out").split_labels(), minlength=3)[2], 30)


def test_import_reports_source_file_and_row(workdir: Path) -> None:
    text = (workdir / "clv_customers.csv").read_text().splitlines()
    fields = text[5].split(",")
    fields[5] = "-12.5"
    text[5] = ",".join(fields)
    (workdir / "clv_customers.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(
        DataValidationError,
        match=r"clv_customers.csv, imported through the customer_value spec.*"
        r"column 'amount': has negative values: 1 row\(s\), first at row 4 \(-12.5\)",
    ):
        import_dataset(workdir / "clv_spec.yaml", workdir / "out")
    assert not (workdir / "out" / "dataset.yaml").exists(), "a failed import writes nothing"


def test_import_missing_mapped_column(workdir: Path) -> None:
    spec = (
        (workdir / "tables_spec.yaml")
        .read_text()
        .replace("risk: risk_class", "risk: risk_class")
        .replace("risk_level: risk_class", "risk_level: riskclass")
    )
    (workdir / "tables_spec.yaml").write_text(spec)
    with pytest.raises(
        DataValidationError, match=r"products.csv: column 'riskclass' \(mapped to 'risk_level'\) not found"
    ):
        import_dataset(workdir / "tables_spec.yaml")


def test_import_unmapped_required_column(workdir: Path) -> None:
    spec = (workdir / "tables_spec.yaml").read_text().replace(", time: day", "")
    (workdir / "tables_spec.yaml").write_text(spec)
    with pytest.raises(
        DataValidationError,
        match=r"deliveries.csv: required column 'time' of table 'exposures' is "
        r"neither in the file nor mapped \(add tables.exposures.columns.time",
    ):
        import_dataset(workdir / "tables_spec.yaml")


def test_import_duplicate_ids_named(workdir: Path) -> None:
    lines = (workdir / "products.csv").read_text().splitlines()
    lines[3] = lines[3].replace("P2", "P1")
    (workdir / "products.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"products.csv.*column 'fund_id': has duplicate ids"):
        import_dataset(workdir / "tables_spec.yaml")


def test_import_spec_errors_name_the_key(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text("name: x\ncustomer_value: {path: clv_customers.csv}\n")
    with pytest.raises(ConfigError, match=r"customer_value.amount: Field required"):
        import_dataset(workdir / "bad.yaml")
    (workdir / "bad.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"exactly one of 'tables'"):
        import_dataset(workdir / "bad.yaml")
    (workdir / "bad.yaml").write_text("name: x\ncustomer_value: {path: nowhere.csv, amount: s}\n")
    with pytest.raises(DataValidationError, match=r"nowhere.csv: file not found"):
        import_dataset(workdir / "bad.yaml")
