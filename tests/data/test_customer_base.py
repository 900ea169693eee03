"""The import option ``transactions.customer_base_model``: BG/NBD + Gamma-Gamma quantities as features."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import hyp2f1

from eoca.data import Dataset
from eoca.data.importer import import_dataset
from eoca.errors import ConfigError
from eoca.peers import make_peer, train_customers

CBM = (
    "cbm_p_alive",
    "cbm_expected_purchases",
    "cbm_p_purchase",
    "cbm_spend_per_purchase",
    "cbm_expected_spend",
    "cbm_log_expected_spend",
)
CAL_END, TARGET_END = 150, 250
N_RANDOM = 400


def _log(seed: int = 0) -> list[tuple[str, int, float]]:
    """A small log: N_RANDOM random customers plus two written by hand (A: three occasions, B: one)."""
    rng = np.random.default_rng(seed)
    rows = [("A", 110, 10.0), ("A", 120, 20.0), ("A", 140, 30.0), ("B", 130, 5.0), ("A", 200, 7.0)]
    for c in range(N_RANDOM):  # BG/NBD's own process: Gamma purchase rates, Beta drop-out after each purchase
        day = float(rng.integers(0, 100))
        rate, drop = rng.gamma(0.8, 1 / 15.0), rng.beta(2.0, 3.0)
        mean_spend = rng.gamma(4.0, 8.0)
        while day <= TARGET_END:
            rows.append((f"c{c:03d}", int(day), round(float(rng.gamma(6.0, mean_spend / 6.0)), 2)))
            if rng.random() < drop:
                break
            day += 1.0 + rng.exponential(1.0 / rate)
    return rows


def _import(tmp: Path, rows: list[tuple[str, int, float]], option: str = "true") -> Dataset:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "log.csv").write_text("cust,day,value\n" + "".join(f"{c},{d},{v}\n" for c, d, v in rows))
    (tmp / "spec.yaml").write_text(
        "name: tiny\nsplit: {test_fraction: 0.3, validation_fraction: 0.2, seed: 0}\n"
        "transactions: {path: log.csv, customer_id: cust, time: day, amount: value, "
        f"window: {{calibration_end: {CAL_END}, target_end: {TARGET_END}}}, customer_base_model: {option}}}\n"
    )
    return import_dataset(tmp / "spec.yaml")


def _row(ds: Dataset, cid: str) -> dict[str, float]:
    ids = ds.customers.column("customer_id").to_pylist()
    return {k: v for k, v in ds.customers.slice(ids.index(cid), 1).to_pylist()[0].items() if k != "customer_id"}


def _cbm(ds: Dataset) -> np.ndarray:
    return np.column_stack([np.asarray(ds.customers.column(c).to_numpy(), dtype=np.float64) for c in CBM])


def test_features_match_the_closed_forms_on_hand_written_customers(tmp_path: Path) -> None:
    pytest.importorskip("lifetimes")
    ds = _import(tmp_path, _log())
    prm = json.loads(ds.spec.notes["customer_base_model"])
    r, alpha, a, b, p, q, v = (prm[k] for k in ("r", "alpha", "a", "b", "p", "q", "v"))
    t = TARGET_END - CAL_END
    assert prm["target_days"] == t
    feats = {f.name for f in ds.spec.customers.features}
    assert set(CBM) <= feats
    # A: occasions on days 110, 120, 140 (10, 20, 30) -> x = 2, t_x = 30, T = 40, m = (20 + 30) / 2 = 25.
    ca = _row(ds, "A")
    assert (ca["frequency"], ca["recency"], ca["T"], ca["monetary_repeat_mean"]) == (2, 30, 40, 25)
    alive = 1.0 / (1.0 + a / (b + 1) * ((alpha + 40) / (alpha + 30)) ** (r + 2))
    tail = ((alpha + 40) / (alpha + 40 + t)) ** (r + 2)
    n = (a + b + 1) / (a - 1) * (1 - tail * hyp2f1(r + 2, b + 2, a + b + 1, t / (alpha + 40 + t))) * alive
    spend = p * (v + 2 * 25) / (p * 2 + q - 1)
    expected = [alive, n, alive * (1 - tail), spend, n * spend, np.log1p(n * spend)]
    np.testing.assert_allclose([ca[c] for c in CBM], expected, rtol=1e-6)
    # B: one occasion on day 130 (5) -> x = 0, T = 20: alive for sure, the population's mean spend.
    cb = _row(ds, "B")
    assert (cb["frequency"], cb["recency"], cb["T"]) == (0, 0, 20)
    n_b = (
        (a + b - 1)
        / (a - 1)
        * (1 - ((alpha + 20) / (alpha + 20 + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + 20 + t)))
    )
    spend_b = p * v / (q - 1)
    assert cb["cbm_p_alive"] == pytest.approx(1.0)
    np.testing.assert_allclose([cb["cbm_expected_purchases"], cb["cbm_spend_per_purchase"]], [n_b, spend_b], rtol=1e-6)
    # The bgnbd peer is the same model: its prediction is the cbm_expected_spend feature.
    peer = make_peer("bgnbd").fit(ds)
    pos = np.arange(ds.customers.num_rows)
    np.testing.assert_allclose(peer.predict_customers(ds, pos)["etv"], _cbm(ds)[:, 4], rtol=1e-9)


def test_features_use_only_the_calibration_window_of_training_customers(tmp_path: Path) -> None:
    pytest.importorskip("lifetimes")
    rows = _log()
    ds = _import(tmp_path / "a", rows)
    # Target-window and later rows: other amounts, an extra purchase each, rows after target_end.
    moved = [(c, d, v * 3.0 + 1.0 if d > CAL_END else v) for c, d, v in rows]
    moved += [(c, TARGET_END - 1, 50.0) for c in {c for c, _, _ in rows}] + [("A", TARGET_END + 30, 99.0)]
    ds2 = _import(tmp_path / "b", moved)
    assert not np.allclose(ds.exposures.column("amount").to_numpy(), ds2.exposures.column("amount").to_numpy())
    np.testing.assert_array_equal(_cbm(ds), _cbm(ds2))
    assert ds.spec.notes["customer_base_model"] == ds2.spec.notes["customer_base_model"]
    # Calibration spend of customers outside the training split changes their own features, not the fit.
    ids = ds.customers.column("customer_id").to_pylist()
    train = {ids[i] for i in train_customers(ds)}
    held = {c for c in ids if c not in train}
    assert held
    other = [(c, d, v * 2.0 if c in held and d <= CAL_END else v) for c, d, v in rows]
    ds3 = _import(tmp_path / "c", other)
    assert ds3.spec.notes["customer_base_model"] == ds.spec.notes["customer_base_model"]
    is_train = np.isin(np.array(ids), sorted(train))
    np.testing.assert_array_equal(_cbm(ds)[is_train], _cbm(ds3)[is_train])
    repeat_held = ~is_train & (np.asarray(ds.customers.column("frequency").to_numpy()) > 0)
    assert repeat_held.any()
    assert np.all(_cbm(ds3)[repeat_held, 3] > _cbm(ds)[repeat_held, 3])
    # Off by default: no cbm_ column, no note.
    plain = _import(tmp_path / "d", rows, option="false")
    assert not [c for c in plain.customers.column_names if c.startswith("cbm_")]
    assert "customer_base_model" not in plain.spec.notes


def test_missing_extra_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lifetimes", None)  # import lifetimes now raises ImportError
    with pytest.raises(ConfigError, match=r"customer_base_model needs the optional extra: pip install 'eoca\[peers\]'"):
        _import(tmp_path, _log())
    # Without the option the same log imports without lifetimes.
    assert _import(tmp_path, _log(), option="false").customers.num_rows == N_RANDOM + 2
