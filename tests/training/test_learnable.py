"""Training refuses data nothing can be learnt from, warns when almost nothing can, and leaves no run folder
behind when the configuration is wrong; a killed `eoca score` leaves nothing a later run keeps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from eoca.cli import app
from eoca.data import Dataset
from eoca.errors import DataValidationError
from eoca.io import partial_folder
from eoca.training import train
from eoca.training.trainer import check_learnable

from .conftest import SMALL


def _with_conversions(ds: Dataset, keep: int) -> Dataset:
    """``ds`` with only the first ``keep`` training conversions left (amounts of the others zeroed)."""
    exp = ds.exposures
    conv = np.asarray(exp.column("converted").to_numpy()).copy()
    train_conv = np.flatnonzero((conv > 0) & ds.split_mask("train"))
    drop = np.concatenate([train_conv[keep:], np.flatnonzero((conv > 0) & ~ds.split_mask("train"))])
    conv[drop] = 0
    amount = np.asarray(exp.column("amount").to_numpy()).copy()
    amount[drop] = 0.0
    exp = exp.set_column(
        exp.schema.get_field_index("converted"), "converted", pa.array(conv, exp.schema.field("converted").type)
    )
    exp = exp.set_column(
        exp.schema.get_field_index("amount"), "amount", pa.array(amount, exp.schema.field("amount").type)
    )
    return dataclasses.replace(ds, exposures=exp)


def test_no_conversion_is_refused_and_one_conversion_warns(tiny: Dataset) -> None:
    with pytest.raises(DataValidationError, match="none of the .* training exposures converted"):
        train(_with_conversions(tiny, 0), {**SMALL, "model": "esmm"}, None, progress=False)
    with pytest.warns(UserWarning, match="only 1 of the .* training exposures converted"):
        check_learnable(_with_conversions(tiny, 1))


def test_one_customer_is_refused(tiny: Dataset) -> None:
    one = dataclasses.replace(tiny, customers=tiny.customers.slice(0, 1))
    with pytest.raises(DataValidationError, match="1 customer\\(s\\); a model needs at least two"):
        check_learnable(one)


def test_model_name_typo_leaves_no_run_folder(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_dir), "--out", str(out), "--model", "esdpmm"])
    assert res.exit_code != 0 and "esdpmm" in str(res.exception)
    assert not out.exists() and not partial_folder(out).exists()
