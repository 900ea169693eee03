"""The Hillstrom loader on the real file beside the checkout."""

from __future__ import annotations

import numpy as np
import pytest

from eoca.data.hillstrom import ARMS, default_hillstrom_path, load_hillstrom
from eoca.errors import DataValidationError

pytestmark = pytest.mark.skipif(
    not default_hillstrom_path().exists(), reason=f"Hillstrom data not found at {default_hillstrom_path()}"
)


def test_hillstrom_customers_arms_and_conversion() -> None:
    ds = load_hillstrom()
    assert ds.n_customers == 64_000 and ds.exposures.num_rows == 64_000
    assert ds.funds.column("fund_id").to_pylist() == list(ARMS)
    arm = np.asarray(ds.exposures.column("fund_id").to_pylist())
    conv = np.asarray(ds.exposures.column("converted").to_numpy())
    rates = {a: round(100 * conv[arm == a].mean(), 3) for a in ARMS}
    assert rates == {"No E-Mail": 0.573, "Mens E-Mail": 1.253, "Womens E-Mail": 0.884}
    np.testing.assert_allclose(ds.exposures.column("propensity").to_numpy(), 1 / 3)
    assert not ds.has_clicks and not ds.has_events and not ds.has_graph
    amount = np.asarray(ds.exposures.column("amount").to_numpy())
    assert amount[conv == 0].max() == 0 and amount[conv == 1].min() > 0


def test_hillstrom_split_is_by_customer_and_seeded() -> None:
    a = load_hillstrom().split_labels()
    b = load_hillstrom().split_labels()
    np.testing.assert_array_equal(a, b)
    assert abs((a == 2).mean() - 0.3) < 0.01


def test_hillstrom_missing_file(tmp_path) -> None:
    with pytest.raises(DataValidationError, match="Hillstrom data not found"):
        load_hillstrom(tmp_path / "nope.csv.gz")
    (tmp_path / "h.csv").write_text("recency,history\n1,2\n")
    with pytest.raises(DataValidationError, match=r"h.csv: missing Hillstrom column\(s\) \['history_segment'"):
        load_hillstrom(tmp_path / "h.csv")
