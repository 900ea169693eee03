from __future__ import annotations

import pyarrow as pa
import pytest

from eoca.data import Dataset, DatasetSpec, FeatureSpec, SplitSpec, TableSpec


def make_tables() -> dict[str, pa.Table]:
    return {
        "customers": pa.table(
            {"customer_id": [10, 11, 12, 13], "risk_tolerance": [1, 5, 3, 2], "age": [30.0, 41.0, 55.0, 23.0]}
        ),
        "funds": pa.table({"fund_id": ["bond", "equity"], "risk_level": [1, 4], "kind": ["b", "e"]}),
        "exposures": pa.table(
            {
                "customer_id": [10, 11, 12, 13, 10, 11],
                "fund_id": ["bond", "equity", "bond", "bond", "bond", "equity"],
                "time": [0, 0, 0, 1, 1, 1],
                "clicked": [0, 1, 1, 0, 1, 1],
                "converted": [0, 1, 0, 0, 1, 0],
                "amount": [0.0, 2500.0, 0.0, 0.0, 120.0, 0.0],
            }
        ),
        "events": pa.table(
            {
                "customer_id": [10, 11],
                "fund_id": ["bond", "equity"],
                "time": [-3, -1],
                "event_type": ["click", "purchase"],
                "amount": [0.0, 900.0],
            }
        ),
        "consumption": pa.table(
            {"customer_id": [10, 12], "merchant_id": [7, 8], "payment_count": [3, 1], "payment_total": [50.0, 9.5]}
        ),
    }


def make_spec() -> DatasetSpec:
    return DatasetSpec(
        name="tiny",
        customers=TableSpec(file="customers.parquet", features=[FeatureSpec(name="age", type="numeric")]),
        funds=TableSpec(file="funds.parquet", features=[FeatureSpec(name="kind", type="categorical")]),
        events=TableSpec(file="events.parquet"),
        consumption=TableSpec(file="consumption.parquet"),
        split=SplitSpec(test_start=1, validation_fraction=0.0),
    )


@pytest.fixture
def tables() -> dict[str, pa.Table]:
    return make_tables()


@pytest.fixture
def tiny() -> Dataset:
    return Dataset(spec=make_spec(), **make_tables()).validate()
