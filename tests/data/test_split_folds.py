"""Cross-fitting splits: ``split.folds`` / ``split.fold`` test every customer exactly once over the folds."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from eoca.data.dataset import split_rows
from eoca.data.schema import SplitSpec


def test_folds_partition_the_customers() -> None:
    cust = np.arange(3_000)
    labels = [split_rows(SplitSpec(folds=3, fold=f, validation_fraction=0.2, seed=7), cust, None) for f in range(3)]
    test = np.stack([lab == 2 for lab in labels])
    assert (test.sum(axis=0) == 1).all(), "every customer is a test customer in exactly one fold"
    assert all(900 < t.sum() < 1_100 for t in test), test.sum(axis=1)
    for lab in labels:
        rest = lab != 2
        assert 0.15 < float((lab[rest] == 1).mean()) < 0.25, "validation is drawn from the other folds"
        assert (lab[rest] != 2).all()
    other = split_rows(SplitSpec(folds=3, fold=0, seed=8), cust, None)
    assert not np.array_equal(other == 2, test[0]), "the seed draws the folds"
    assert SplitSpec(folds=3).by_customer and SplitSpec(test_fraction=0.3).by_customer
    assert not SplitSpec(test_start=2).by_customer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 3, "fold": 3}, "fold must be below"),
        ({"folds": 3, "test_fraction": 0.3}, "not test_fraction and folds"),
        ({"folds": 1}, "greater than or equal to 2"),
    ],
)
def test_bad_fold_rules_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SplitSpec(**kwargs)  # type: ignore[arg-type]
