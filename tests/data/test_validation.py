"""Every bad-input case of the data model gives an error naming the table, column and first offending rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from eoca.data import Dataset, DatasetSpec
from eoca.errors import ConfigError, DataValidationError

from .conftest import make_spec, make_tables


def _with(table: pa.Table, column: str, values: list) -> pa.Table:
    return table.set_column(table.column_names.index(column), column, pa.array(values))


def _check(spec: DatasetSpec, **tables: pa.Table) -> None:
    Dataset(spec=spec, **tables).validate()


def test_valid_dataset_round_trips(tiny: Dataset, tmp_path) -> None:
    tiny.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.customers.equals(tiny.customers)
    assert back.exposures.equals(tiny.exposures)
    assert back.has_clicks and back.has_events and back.has_graph
    np.testing.assert_array_equal(back.split_labels(), [0, 0, 0, 2, 2, 2])


def test_missing_column(tables) -> None:
    tables["exposures"] = tables["exposures"].drop(["converted"])
    with pytest.raises(
        DataValidationError,
        match=r"table 'exposures' \(exposures.parquet\): missing required "
        r"column\(s\) \['converted'\]",
    ):
        _check(make_spec(), **tables)


def test_extra_column_must_be_declared(tables) -> None:
    tables["customers"] = tables["customers"].append_column("income", pa.array([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(DataValidationError, match=r"table 'customers'.*unexpected column\(s\) \['income'\]: declare"):
        _check(make_spec(), **tables)


def test_declared_feature_absent(tables) -> None:
    tables["customers"] = tables["customers"].drop(["age"])
    with pytest.raises(DataValidationError, match=r"declared feature column\(s\) \['age'\] are not in the table"):
        _check(make_spec(), **tables)


def test_wrong_type(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "amount", ["0", "1", "0", "0", "1", "0"])
    with pytest.raises(DataValidationError, match=r"column 'amount': has type string, expected number >= 0"):
        _check(make_spec(), **tables)


def test_wrong_feature_type(tables) -> None:
    tables["customers"] = _with(tables["customers"], "age", ["a", "b", "c", "d"])
    with pytest.raises(DataValidationError, match=r"table 'customers'.*column 'age': has type string, expected number"):
        _check(make_spec(), **tables)


def test_nan_amount(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "amount", [0.0, float("nan"), 0.0, 0.0, 120.0, 0.0])
    with pytest.raises(
        DataValidationError, match=r"column 'amount': has NaN or infinite values: 1 row\(s\), first at row 1"
    ):
        _check(make_spec(), **tables)


def test_negative_amount(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "amount", [0.0, 2500.0, 0.0, 0.0, -5.0, 0.0])
    with pytest.raises(
        DataValidationError, match=r"column 'amount': has negative values: 1 row\(s\), first at row 4 \(-5.0\)"
    ):
        _check(make_spec(), **tables)


def test_missing_values(tables) -> None:
    tables["customers"] = _with(tables["customers"], "age", [30.0, None, 55.0, None])
    with pytest.raises(DataValidationError, match=r"column 'age': has missing values: 2 row\(s\), first at row 1, 3"):
        _check(make_spec(), **tables)


def test_amount_without_conversion(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "amount", [0.0, 2500.0, 75.0, 0.0, 120.0, 0.0])
    with pytest.raises(
        DataValidationError, match=r"column 'amount': is > 0 where converted = 0.*first at row 2 \(75.0\)"
    ):
        _check(make_spec(), **tables)


def test_binary_label_out_of_range(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "converted", [0, 1, 0, 2, 1, 0])
    with pytest.raises(
        DataValidationError, match=r"column 'converted': must be 0 or 1: 1 row\(s\), first at row 3 \(2.0\)"
    ):
        _check(make_spec(), **tables)


def test_conversion_without_click(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "clicked", [0, 0, 1, 0, 1, 1])
    with pytest.raises(DataValidationError, match=r"column 'converted': is 1 where clicked = 0.*first at row 1"):
        _check(make_spec(), **tables)


def test_duplicate_customer_ids(tables) -> None:
    tables["customers"] = _with(tables["customers"], "customer_id", [10, 11, 10, 13])
    with pytest.raises(
        DataValidationError, match=r"table 'customers'.*column 'customer_id': has duplicate ids.*first at row 2 \(10\)"
    ):
        _check(make_spec(), **tables)


def test_duplicate_fund_ids(tables) -> None:
    tables["funds"] = _with(tables["funds"], "fund_id", ["bond", "bond"])
    with pytest.raises(DataValidationError, match=r"table 'funds'.*column 'fund_id': has duplicate ids"):
        _check(make_spec(), **tables)


def test_exposure_unknown_customer(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "customer_id", [10, 11, 12, 99, 10, 98])
    with pytest.raises(
        DataValidationError,
        match=r"table 'exposures'.*column 'customer_id': refers to unknown customers: "
        r"2 row\(s\), first at row 3 \(99\), 5 \(98\)",
    ):
        _check(make_spec(), **tables)


def test_exposure_unknown_fund(tables) -> None:
    tables["exposures"] = _with(tables["exposures"], "fund_id", ["bond", "equity", "cash", "bond", "bond", "equity"])
    with pytest.raises(
        DataValidationError, match=r"column 'fund_id': refers to unknown funds: 1 row\(s\), first at row 2 \('cash'\)"
    ):
        _check(make_spec(), **tables)


def test_event_unknown_customer_and_type(tables) -> None:
    bad = dict(tables)
    bad["events"] = _with(tables["events"], "customer_id", [10, 77])
    with pytest.raises(DataValidationError, match=r"table 'events'.*column 'customer_id': refers to unknown customers"):
        _check(make_spec(), **bad)
    bad["events"] = _with(tables["events"], "event_type", ["click", "hover"])
    with pytest.raises(
        DataValidationError,
        match=r"column 'event_type': must be one of \['click', 'purchase', 'sell', "
        r"'favourite'\]: 1 row\(s\), first at row 1 \('hover'\)",
    ):
        _check(make_spec(), **bad)


def test_consumption_unknown_customer(tables) -> None:
    tables["consumption"] = _with(tables["consumption"], "customer_id", [10, 55])
    with pytest.raises(DataValidationError, match=r"table 'consumption'.*refers to unknown customers"):
        _check(make_spec(), **tables)


def test_risk_out_of_range(tables) -> None:
    tables["customers"] = _with(tables["customers"], "risk_tolerance", [1, 6, 3, 0])
    with pytest.raises(
        DataValidationError,
        match=r"column 'risk_tolerance': risk tolerance outside the declared range "
        r"\[1, 5\]: 2 row\(s\), first at row 1 \(6.0\), 3 \(0.0\)",
    ):
        _check(make_spec(), **tables)
    tables = make_tables()
    tables["funds"] = _with(tables["funds"], "risk_level", [1, 9])
    with pytest.raises(DataValidationError, match=r"table 'funds'.*risk level outside the declared range"):
        _check(make_spec(), **tables)


def test_empty_table(tables) -> None:
    tables["funds"] = tables["funds"].slice(0, 0)
    with pytest.raises(DataValidationError, match=r"table 'funds' \(funds.parquet\): the table is empty"):
        _check(make_spec(), **tables)


def test_truth_must_cover_every_pair(tables) -> None:
    spec = make_spec().model_copy(
        update={"truth": make_spec().customers.model_copy(update={"file": "truth.parquet", "features": []})}
    )
    truth = pa.table(
        {"customer_id": [10], "fund_id": ["bond"], "p": [0.01], "mu": [7.0], "sigma": [1.0], "etv": [20.0]}
    )
    with pytest.raises(
        DataValidationError, match=r"table 'truth'.*has 1 rows; it must have one per \(customer, fund\) pair = 8"
    ):
        _check(spec, truth=truth, **tables)


def test_error_names_source_file_after_load(tiny: Dataset, tmp_path) -> None:
    tiny.save(tmp_path / "ds")
    exp = tiny.exposures
    import pyarrow.parquet as pq

    pq.write_table(_with(exp, "amount", [0.0, 1.0, 0.0, 0.0, -1.0, 0.0]), tmp_path / "ds" / "exposures.parquet")
    with pytest.raises(DataValidationError, match=str(tmp_path / "ds" / "exposures.parquet")):
        Dataset.load(tmp_path / "ds")


def test_missing_spec_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(DataValidationError, match="no dataset spec found"):
        Dataset.load(tmp_path)
    (tmp_path / "dataset.yaml").write_text("name: x\nrisk_levels: [5, 1]\n")
    with pytest.raises(ConfigError, match=r"dataset.yaml: risk_levels"):
        Dataset.load(tmp_path)
    (tmp_path / "dataset.yaml").write_text("name: x\nsplit: {test_start: 3, test_fraction: 0.2}\n")
    with pytest.raises(ConfigError, match=r"split: .*not test_start and test_fraction"):
        Dataset.load(tmp_path)
    (tmp_path / "dataset.yaml").write_text("name: x\nunknown_key: 1\n")
    with pytest.raises(ConfigError, match=r"unknown_key: Extra inputs are not permitted"):
        Dataset.load(tmp_path)


def test_missing_table_file(tiny: Dataset, tmp_path) -> None:
    tiny.save(tmp_path / "ds")
    (tmp_path / "ds" / "events.parquet").unlink()
    with pytest.raises(
        DataValidationError, match=r"table 'events': file .*events.parquet named in .*dataset.yaml does not exist"
    ):
        Dataset.load(tmp_path / "ds")


def test_split_by_customer_fraction(tables) -> None:
    spec = make_spec().model_copy(
        update={"split": make_spec().split.model_copy(update={"test_start": None, "test_fraction": 0.5, "seed": 3})}
    )
    ds = Dataset(spec=spec, **tables).validate()
    labels = ds.split_labels()
    cust = np.asarray(tables["exposures"].column("customer_id").to_numpy())
    for c in np.unique(cust):
        assert len(set((labels[cust == c] == 2).tolist())) == 1, "a customer's exposures must share the test split"


def test_split_leaving_no_training_rows(tables) -> None:
    spec = make_spec().model_copy(update={"split": make_spec().split.model_copy(update={"test_start": 0})})
    with pytest.raises(DataValidationError, match="leaves no training exposures"):
        Dataset(spec=spec, **tables).validate().split_labels()


def test_index_lookup(tiny: Dataset) -> None:
    np.testing.assert_array_equal(tiny.customer_index(pa.array([13, 10])), [3, 0])
    with pytest.raises(DataValidationError, match=r"1 id\(s\) not found in funds, e.g. \['gold'\]"):
        tiny.fund_index(pa.array(["bond", "gold"]))
