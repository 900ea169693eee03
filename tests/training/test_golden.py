"""Golden output of one seeded zoo model: the same world, config and seed must give the recorded numbers.

A change in the simulator, the feature encodings, the model, the loss or the training loop that moves these
numbers is a change in what the models learn, and must be deliberate: rerun with ``EOCA_UPDATE_GOLDEN=1`` to
record the new values (and say why in the commit). The tolerance (relative 1e-5) absorbs the last-bit
differences between CPU instruction sets, nothing more.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from eoca.data import Dataset
from eoca.training import train

GOLDEN = Path(__file__).parent / "golden" / "esmm_tiny_seed7.json"
CONFIG = {
    "model": "esmm",
    "seed": 7,
    "max_epochs": 2,
    "patience": 2,
    "batch_size": 512,
    "max_train_rows": 3000,
    "num_threads": 1,
    "deterministic": True,
}


def test_seeded_esmm_reproduces_its_golden_output(tiny: Dataset) -> None:
    trained = train(tiny, CONFIG, None, progress=False)
    rng = np.random.default_rng(11)
    cust = rng.integers(0, tiny.n_customers, 16)
    fund = rng.integers(0, tiny.n_funds, 16)
    pred = trained.predict_pairs(tiny, cust, fund)
    got = {
        "customer_pos": cust.tolist(),
        "fund_pos": fund.tolist(),
        "p": [float(x) for x in pred["p"]],
        "etv": [float(x) for x in pred["etv"]],
        "valid_loss": [float(h["valid_loss"]) for h in trained.history],
    }
    if os.environ.get("EOCA_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"config": CONFIG, **got}, indent=1) + "\n", encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert want["config"] == CONFIG
    assert got["customer_pos"] == want["customer_pos"] and got["fund_pos"] == want["fund_pos"]
    for key in ("p", "etv", "valid_loss"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=0, err_msg=key)
