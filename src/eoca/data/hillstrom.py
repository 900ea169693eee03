"""Kevin Hillstrom's MineThatData e-mail test as an eoca dataset.

64,000 customers who bought in the last twelve months were randomly sent a men's merchandise e-mail, a women's
merchandise e-mail, or no e-mail (probability 1/3 each) and followed for two weeks. eoca reads it as a platform
with three "funds" (the arms) and one exposure per customer: the arm received, whether the customer converted,
and the amount spent. The randomisation is recorded (``propensity`` = 1/3) for off-policy evaluation.

Assumptions, stated because the data has no such fields:

* **Risk levels**: none exist. Every arm gets the lowest level (1) and every customer the highest tolerance (5),
  so the risk rule never binds. This is the neutral default: it adds no constraint the experiment did not have.
* **Clicks**: the ``visit`` column is an outcome of the e-mail, not a profile feature, and is not the click the
  entire-space models expect on a fund platform; it is not imported (no ``clicked`` column), so models train on
  conversion directly.
* **Split**: no time structure (one exposure per customer), so 30% of customers are held out as the test set,
  drawn with a fixed seed; 10% of the rest validate.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eoca.data.dataset import Dataset
from eoca.data.schema import DatasetSpec, FeatureSpec, FeatureType, SplitSpec, TableSpec
from eoca.data.sources import read_inferred
from eoca.errors import DataValidationError

ARMS: tuple[str, ...] = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
ARM_PROPENSITY = 1.0 / 3.0
EXPECTED_COLUMNS = (
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
    "segment",
    "visit",
    "conversion",
    "spend",
)


def default_hillstrom_path() -> Path:
    """Where ``--data hillstrom`` looks: ``$EOCA_DATA/hillstrom/hillstrom.csv.gz`` when the environment variable
    ``EOCA_DATA`` is set, else ``../shared/data/hillstrom/hillstrom.csv.gz`` relative to the working directory
    (the shared data folder beside a checkout, when commands run from the checkout's root). The location never
    depends on where the package is installed; pass an explicit path to use another copy."""
    env = os.environ.get("EOCA_DATA")
    root = Path(env) if env else Path.cwd().parent / "shared" / "data"
    return root / "hillstrom" / "hillstrom.csv.gz"


def load_hillstrom(path: str | os.PathLike[str] | None = None, *, test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """Load the Hillstrom CSV (plain or gzipped) as a validated :class:`Dataset` with three arms as funds."""
    file = Path(path) if path is not None else default_hillstrom_path()
    if not file.exists():
        raise DataValidationError(
            f"{file}: Hillstrom data not found. Pass its path (e.g. --data path/to/hillstrom.csv.gz) or set "
            "EOCA_DATA to the folder that holds hillstrom/hillstrom.csv.gz"
        )
    src = read_inferred(file)
    missing = [c for c in EXPECTED_COLUMNS if c not in src.column_names]
    if missing:
        raise DataValidationError(f"{file}: missing Hillstrom column(s) {missing}; found {src.column_names}")
    n = src.num_rows
    arm = src.column("segment")
    unknown = pc.invert(pc.is_in(arm, value_set=pa.array(list(ARMS))))
    if pc.any(unknown).as_py():
        rows = np.flatnonzero(np.asarray(unknown.to_numpy(zero_copy_only=False)))
        raise DataValidationError(
            f"{file}, column 'segment': expected one of {list(ARMS)}; {len(rows):,} row(s) differ, first at row "
            f"{int(rows[0])} ({arm[int(rows[0])].as_py()!r})"
        )
    ids = pa.array(np.arange(n, dtype=np.int64))
    customers = pa.table(
        {
            "customer_id": ids,
            "risk_tolerance": pa.array(np.full(n, 5, dtype=np.int64)),
            "recency": pc.cast(src.column("recency"), pa.float64()),
            "history": pc.cast(src.column("history"), pa.float64()),
            "history_segment": src.column("history_segment"),
            "mens": src.column("mens"),
            "womens": src.column("womens"),
            "zip_code": src.column("zip_code"),
            "newbie": src.column("newbie"),
            "channel": src.column("channel"),
        }
    )
    funds = pa.table(
        {
            "fund_id": pa.array(list(ARMS)),
            "risk_level": pa.array([1, 1, 1], type=pa.int64()),
            "is_email": pa.array([0.0, 1.0, 1.0]),
            "audience": pa.array(["none", "men", "women"]),
        }
    )
    exposures = pa.table(
        {
            "customer_id": ids,
            "fund_id": arm,
            "time": pa.array(np.zeros(n, dtype=np.int64)),
            "converted": src.column("conversion"),
            "amount": pc.cast(src.column("spend"), pa.float64()),
            "propensity": pa.array(np.full(n, ARM_PROPENSITY)),
        }
    )
    num: FeatureType = "numeric"
    cat: FeatureType = "categorical"
    spec = DatasetSpec(
        name="hillstrom",
        description="Kevin Hillstrom's MineThatData e-mail test: 64,000 customers, three randomized arms.",
        customers=TableSpec(
            file="customers.parquet",
            features=[
                FeatureSpec(name="recency", type=num, description="months since last purchase"),
                FeatureSpec(name="history", type=num, description="dollars spent in the past year"),
                FeatureSpec(name="history_segment", type=cat),
                FeatureSpec(name="mens", type=cat, description="bought men's merchandise in the past year"),
                FeatureSpec(name="womens", type=cat, description="bought women's merchandise in the past year"),
                FeatureSpec(name="zip_code", type=cat),
                FeatureSpec(name="newbie", type=cat, description="new customer in the past twelve months"),
                FeatureSpec(name="channel", type=cat),
            ],
        ),
        funds=TableSpec(
            file="funds.parquet",
            features=[FeatureSpec(name="is_email", type=num), FeatureSpec(name="audience", type=cat)],
        ),
        split=SplitSpec(test_fraction=test_fraction, validation_fraction=0.1, seed=seed),
        propensity="logged",
        notes={
            "source": str(file),
            "risk": "no risk levels in the data: arms at level 1, customers at tolerance 5 (rule never binds)",
            "clicks": "visit is an outcome, not imported; models train on conversion directly",
        },
    )
    return Dataset(
        spec=spec,
        customers=customers,
        funds=funds,
        exposures=exposures,
        sources={t: str(file) for t in ("customers", "funds", "exposures")},
    ).validate()
