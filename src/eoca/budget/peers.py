"""Peer uplift models from scikit-uplift (optional extra ``eoca[peers]``), allocated by the same exact solver.

scikit-uplift's meta-learners handle one treatment against the control, so each incentive arm gets its own
learner on the (arm, control) customers, for conversion (a LightGBM classifier) and for spend (a LightGBM
regressor). The arm's p and value are the learner's treated-level predictions; arm 0's are the mean of the
learners' control-level predictions.

* ``peer_slearner``: ``sklift.models.SoloModel`` (one model with the treatment flag as a feature);
* ``peer_tlearner``: ``sklift.models.TwoModels`` with ``method="vanilla"`` (separate treated and control models).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eoca.budget.data import IncentiveData
from eoca.budget.models import Prediction
from eoca.errors import EocaError

__all__ = ["PEER_NAMES", "SkliftPeer", "make_peer"]

PEER_NAMES = ("peer_slearner", "peer_tlearner")


def _sklift() -> Any:
    try:
        import sklift.models as sm
    except ImportError:
        raise EocaError("the peer models need scikit-uplift: pip install 'eoca[peers]' (or scikit-uplift)") from None
    return sm


class SkliftPeer:
    """One scikit-uplift meta-learner per arm and outcome (see the module docstring)."""

    def __init__(self, method: str, seed: int = 0, n_estimators: int = 200) -> None:
        if method not in ("slearner", "tlearner"):
            raise EocaError(f"unknown scikit-uplift method '{method}'; valid: slearner, tlearner")
        self.method, self.seed, self.n_estimators = method, seed, n_estimators
        self.name = f"peer_{method}"
        self.learners_: list[tuple[Any, Any]] = []

    def _learner(self, classifier: bool) -> Any:
        import lightgbm as lgb

        from eoca.budget.models import _lgbm_params

        sm = _sklift()
        est = (lgb.LGBMClassifier if classifier else lgb.LGBMRegressor)(**_lgbm_params(self.seed, self.n_estimators))
        if self.method == "slearner":
            return sm.SoloModel(estimator=est)
        ctrl = (lgb.LGBMClassifier if classifier else lgb.LGBMRegressor)(**_lgbm_params(self.seed, self.n_estimators))
        return sm.TwoModels(estimator_trmnt=est, estimator_ctrl=ctrl, method="vanilla")

    def fit(self, data: IncentiveData) -> SkliftPeer:
        self.learners_ = []
        for t in range(1, data.n_arms):
            sel = np.flatnonzero((data.arm == t) | (data.arm == 0))
            treated = (data.arm[sel] == t).astype(int)
            conv = self._learner(True).fit(data.features[sel], data.converted[sel].astype(int), treated)
            spend = self._learner(False).fit(data.features[sel], data.value[sel], treated)
            self.learners_.append((conv, spend))
        return self

    def predict(self, features: np.ndarray) -> Prediction:
        n, k = features.shape[0], len(self.learners_) + 1
        p = np.zeros((n, k))
        value = np.zeros((n, k))
        for t, (conv, spend) in enumerate(self.learners_, start=1):
            conv.predict(features)
            spend.predict(features)
            p[:, t] = conv.trmnt_preds_
            value[:, t] = np.maximum(spend.trmnt_preds_, 0.0)
            p[:, 0] += conv.ctrl_preds_ / (k - 1)
            value[:, 0] += np.maximum(spend.ctrl_preds_, 0.0) / (k - 1)
        return Prediction(p=np.clip(p, 0.0, 1.0), value=value)


def make_peer(name: str, seed: int = 0) -> SkliftPeer:
    if name not in PEER_NAMES:
        raise EocaError(f"unknown peer '{name}'; valid: {', '.join(PEER_NAMES)}")
    return SkliftPeer(name.removeprefix("peer_"), seed)
