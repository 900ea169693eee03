"""The synthetic donation sample's oracle: the exact expected donation and the truth file beside the sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from eoca.data.donations import (
    MAX_DONATION,
    SIGMA,
    donation_mu,
    donation_spec,
    expected_donation,
    observable_expected_value,
    response_probability,
    write_donation_sample,
)
from eoca.data.importer import import_dataset


def test_expected_donation_matches_simulation() -> None:
    mu = np.array([-1.0, 0.0, 2.7, 5.5, 6.5])
    rng = np.random.default_rng(0)
    draws = np.clip(np.round(np.exp(rng.normal(mu[:, None], SIGMA, (mu.size, 400_000)))), 1, MAX_DONATION)
    exact = expected_donation(mu)
    np.testing.assert_allclose(exact, draws.mean(axis=1), rtol=3e-3)
    assert exact[0] >= 1.0 and exact[-1] <= MAX_DONATION  # the clip at both ends


def test_truth_file_covers_the_sample_with_exact_ids(tmp_path: Path) -> None:
    info = write_donation_sample(
        tmp_path / "d.csv", population=20_000, sample_size=1_000, seed=2, truth_path=tmp_path / "t.csv"
    )
    as_text = pacsv.ConvertOptions(column_types={"CONTROLN": pa.string()})
    sample = pacsv.read_csv(tmp_path / "d.csv", convert_options=as_text)
    truth = pacsv.read_csv(tmp_path / "t.csv", convert_options=as_text)
    assert truth.column("CONTROLN").to_pylist() == sample.column("CONTROLN").to_pylist()
    p, etv = truth.column("p").to_numpy(), truth.column("etv").to_numpy()
    assert ((p > 0) & (p < 1)).all() and (etv > 0).all() and (etv <= p * MAX_DONATION).all()
    # Responders were oversampled: the true probabilities of the sample's rows average the population rate
    # among the non-responders' half and more among the responders' half, so the sample mean of p sits
    # between the population rate and the sample's 50%.
    assert info["population_rate"] < float(p.mean()) < info["sample_rate"]


def test_donation_spec_imports_the_sample_with_weights(tmp_path: Path) -> None:
    info = write_donation_sample(tmp_path / "d.csv", population=4_000, sample_size=400, seed=1)
    spec = donation_spec(
        "d.csv",
        ["age", "region"],
        split="{test_fraction: 0.2, validation_fraction: 0.1, seed: 0}",
        population_rate=info["population_rate"],
    )
    (tmp_path / "spec.yaml").write_text(spec)
    ds = import_dataset(tmp_path / "spec.yaml")
    assert ds.customers.num_rows == 400
    assert f"converted_rate: {info['population_rate']:.4f}" in spec
    with pytest.raises(ValueError, match="unknown donation features \\['gifts'\\]"):
        donation_spec("d.csv", ["gifts"], split="{test_fraction: 0.2}")


def test_observable_expected_value_averages_the_blank_features_over_their_population() -> None:
    n_gifts, avg_gift = np.array([1.0, 6.0, 3.0]), np.array([5.0, 30.0, 12.0])
    months, income, age = np.array([10.0, np.nan, 3.0]), np.array([np.nan, 2.0, 5.0]), np.array([np.nan, 40.0, 70.0])
    got = observable_expected_value(n_gifts, avg_gift, months, income, age)
    # Monte Carlo over the generator's own draws of the blank features (income, age, months).
    rng = np.random.default_rng(0)
    k = 200_000
    draw = {
        "income": rng.integers(1, 8, k).astype(np.float64),
        "age": np.clip(rng.normal(55.0, 15.0, k), 18, 95).round(),
        "months": rng.integers(1, 37, k).astype(np.float64),
    }
    for row in range(3):
        cols = {"income": income[row], "age": age[row], "months": months[row]}
        x = {c: draw[c] if np.isnan(v) else np.full(k, v) for c, v in cols.items()}
        p = response_probability(np.full(k, n_gifts[row]), x["months"], x["income"], x["age"])
        mc = p * expected_donation(donation_mu(np.full(k, avg_gift[row]), x["income"]))
        np.testing.assert_allclose(got[row], mc.mean(), rtol=5e-3)
    # Nothing blank: the complete-feature truth itself.
    exact = response_probability(n_gifts[2], months[2], income[2], age[2]) * expected_donation(
        donation_mu(avg_gift[2:], income[2])
    )
    np.testing.assert_allclose(got[2], exact[0], rtol=1e-12)


def test_truth_file_observed_value_matches_complete_rows(tmp_path: Path) -> None:
    write_donation_sample(
        tmp_path / "d.csv", population=20_000, sample_size=1_000, seed=2, truth_path=tmp_path / "t.csv"
    )
    as_text = pacsv.ConvertOptions(column_types={"CONTROLN": pa.string()})
    sample = pacsv.read_csv(tmp_path / "d.csv", convert_options=as_text)
    truth = pacsv.read_csv(tmp_path / "t.csv", convert_options=as_text)
    complete = np.ones(sample.num_rows, dtype=bool)
    for col in ("AGE", "INCOME", "MONTHS_SINCE_LAST"):
        complete &= ~np.asarray(sample.column(col).is_null())
    etv, observed = truth.column("etv").to_numpy(), truth.column("etv_observed").to_numpy()
    assert 0 < complete.sum() < sample.num_rows
    np.testing.assert_allclose(observed[complete], etv[complete], rtol=1e-12)
    assert not np.allclose(observed[~complete], etv[~complete])
