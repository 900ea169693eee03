"""The dataset schema: the one place that says which tables a dataset has and what their columns mean.

A dataset is a folder of Parquet tables described by ``dataset.yaml`` (:class:`DatasetSpec`). Each table has
fixed *canonical* columns (ids, labels, times) plus declared *feature* columns, each with a role and a type.
Everything that reads or writes a dataset (simulator, importer, Hillstrom loader, models) goes through this
module, so a column is named in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FeatureType = Literal["numeric", "categorical", "sequence"]
EVENT_TYPES: tuple[str, ...] = ("click", "purchase", "sell", "favourite")
SPEC_FILE = "dataset.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureSpec(_Strict):
    """A feature column. ``numeric``: float; ``categorical``: int or string codes; ``sequence``: a list column
    of int or string tokens (e.g. recently viewed categories), embedded and pooled by the models."""

    name: str
    type: FeatureType
    description: str = ""
    scenarios: list[str] | None = Field(
        default=None,
        description="fund features only: the scenarios (values of the dataset's scenario_column) the feature "
        "exists for; it is missing for funds of other scenarios by design",
    )


class TableSpec(_Strict):
    file: str
    features: list[FeatureSpec] = Field(default_factory=list)

    @field_validator("features")
    @classmethod
    def _unique_names(cls, v: list[FeatureSpec]) -> list[FeatureSpec]:
        names = [f.name for f in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"feature names declared twice: {dup}")
        return v


class SplitSpec(_Strict):
    """How exposures are split into train / validation / test.

    Time-based (EOCA): exposures with ``time >= test_start`` are the test period; the earlier ones are split at
    random into train and validation by ``validation_fraction``. When ``test_start`` is null the last distinct
    time value is the test period. Randomised data with no time structure (one exposure per customer, like
    Hillstrom) uses ``test_fraction`` instead: that share of *customers*, drawn with ``seed``, is held out.
    Cross-fitting uses ``folds`` and ``fold``: the customers are cut into ``folds`` equal random parts (drawn with
    ``seed``) and part ``fold`` is held out, so the runs ``fold = 0 .. folds - 1`` test every customer once.
    """

    test_start: int | None = None
    test_fraction: float | None = Field(default=None, gt=0.0, lt=1.0)
    folds: int | None = Field(default=None, ge=2)
    fold: int = Field(default=0, ge=0)
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _one_rule(self) -> SplitSpec:
        rules = [k for k in ("test_start", "test_fraction", "folds") if getattr(self, k) is not None]
        if len(rules) > 1:
            raise ValueError(
                "give one of split.test_start (time-based), split.test_fraction or split.folds (by customer), "
                f"not {' and '.join(rules)}"
            )
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"split.fold must be below split.folds ({self.folds}), got {self.fold}")
        return self

    @property
    def by_customer(self) -> bool:
        """Whether the test set is drawn by customer (``test_fraction`` or ``folds``), not by time."""
        return self.test_fraction is not None or self.folds is not None


class DatasetSpec(_Strict):
    """The content of ``dataset.yaml``."""

    name: str
    description: str = ""
    risk_levels: tuple[int, int] = (1, 5)
    customers: TableSpec = TableSpec(file="customers.parquet")
    funds: TableSpec = TableSpec(file="funds.parquet")
    exposures: TableSpec = TableSpec(file="exposures.parquet")
    events: TableSpec | None = None
    consumption: TableSpec | None = None
    truth: TableSpec | None = None
    split: SplitSpec = SplitSpec()
    sequence_length: int = Field(default=32, ge=1, description="behaviour events kept per customer (latest)")
    propensity: Literal["logged", "uniform", "unknown"] = "unknown"
    notes: dict[str, str] = Field(default_factory=dict)
    tier_column: str | None = Field(
        default=None, description="a declared categorical customer feature holding the customer's tier (TAMOR)"
    )
    scenario_column: str | None = Field(
        default=None, description="a declared categorical fund feature holding the item's business scenario (TAMOR)"
    )

    @field_validator("risk_levels")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] > v[1]:
            raise ValueError(f"must be [low, high] with low <= high, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        for table in ("events", "consumption", "truth", "exposures"):
            ts = getattr(self, table)
            if ts is not None and ts.features:
                raise ValueError(f"{table}: only customers and funds declare features")
        for key, spec in (("tier_column", self.customers), ("scenario_column", self.funds)):
            column = getattr(self, key)
            kinds = {f.name: f.type for f in spec.features}
            if column is not None and kinds.get(column) != "categorical":
                raise ValueError(f"{key} {column!r} must name a declared categorical feature of {spec.file}")
        scoped = [f.name for f in self.customers.features if f.scenarios is not None]
        if scoped:
            raise ValueError(f"customers: scenarios applies to fund features only, found it on {scoped}")
        scoped = [f.name for f in self.funds.features if f.scenarios is not None]
        if scoped and self.scenario_column is None:
            raise ValueError(f"funds: features {scoped} name scenarios, so scenario_column must be set")
        return self


# --- canonical columns -------------------------------------------------------------------------------------

ColumnKind = Literal["id", "int", "binary", "float", "string", "nonneg_float", "prob"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    required: bool = True
    description: str = ""


TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column("customer_id", "id", description="unique customer key (int or string)"),
        Column("risk_tolerance", "int", description="highest fund risk level the customer may be shown"),
    ),
    "funds": (
        Column("fund_id", "id", description="unique fund (item) key"),
        Column("risk_level", "int", description="the fund's regulatory risk level"),
    ),
    "exposures": (
        Column("customer_id", "id"),
        Column("fund_id", "id"),
        Column("time", "int", description="delivery period (or day) of the exposure"),
        Column("clicked", "binary", required=False, description="1 if the customer clicked the promotion"),
        Column("converted", "binary", description="1 if the customer bought the fund"),
        Column("amount", "nonneg_float", description="purchase amount, 0 when not converted"),
        Column("propensity", "prob", required=False, description="logging policy's probability of this fund"),
        Column(
            "weight",
            "nonneg_float",
            required=False,
            description="sampling weight: how many population exposures the row stands for (oversampled data)",
        ),
    ),
    "events": (
        Column("customer_id", "id"),
        Column("fund_id", "id"),
        Column("time", "int"),
        Column("event_type", "string", description="one of click, purchase, sell, favourite"),
        Column("amount", "nonneg_float", description="transaction amount (0 for click / favourite)"),
    ),
    "consumption": (
        Column("customer_id", "id"),
        Column("merchant_id", "id"),
        Column("payment_count", "int", description="payments from the customer to the merchant"),
        Column("payment_total", "nonneg_float", description="total paid to the merchant"),
    ),
    "truth": (
        Column("customer_id", "id"),
        Column("fund_id", "id"),
        Column("p", "prob", description="true conversion probability of the pair"),
        Column("mu", "float", description="true mean of log(amount + 1) given conversion"),
        Column("sigma", "float", description="true std of log(amount + 1) given conversion"),
        Column("etv", "nonneg_float", description="true expected transaction value"),
    ),
}
REQUIRED_TABLES = ("customers", "funds", "exposures")
OPTIONAL_TABLES = ("events", "consumption", "truth")
ALL_TABLES = REQUIRED_TABLES + OPTIONAL_TABLES


def canonical_columns(table: str) -> tuple[Column, ...]:
    return TABLE_COLUMNS[table]


def arrow_type_ok(kind: ColumnKind | FeatureType, typ: pa.DataType) -> bool:
    """Whether an Arrow type is acceptable for a canonical column kind or a feature type."""
    is_int = pa.types.is_integer(typ)
    is_num = is_int or pa.types.is_floating(typ)
    is_str = pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_dictionary(typ)
    if kind == "id":
        return is_int or is_str
    if kind in ("int", "binary"):
        return is_int or pa.types.is_boolean(typ)
    if kind in ("float", "nonneg_float", "prob", "numeric"):
        return is_num or pa.types.is_boolean(typ)
    if kind in ("string",):
        return is_str
    if kind == "categorical":
        return is_int or is_str or pa.types.is_boolean(typ)
    if kind == "sequence":
        return (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and (
            pa.types.is_integer(typ.value_type) or pa.types.is_string(typ.value_type)
        )
    return False


KIND_HINT: dict[str, str] = {
    "id": "integer or string",
    "int": "integer",
    "binary": "integer 0/1 or boolean",
    "float": "number",
    "nonneg_float": "number >= 0",
    "prob": "number in [0, 1]",
    "string": "string",
    "numeric": "number",
    "categorical": "integer or string",
    "sequence": "list of integers or strings",
}
