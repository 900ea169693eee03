"""``eoca run`` with an incentive campaign adds the budget section and folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from eoca.cli import app


def test_run_with_incentives_has_budget_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eoca.budget import run as budget_run

    monkeypatch.setattr(budget_run, "DEFAULT_MODELS", ("t_learner",))
    out = tmp_path / "run"
    sets = [
        "simulator.customers=3000",
        "simulator.funds=3",
        "models=[esmm]",
        "train.max_epochs=1",
        "ab_test.n_bootstrap=50",
        "progress=false",
        "simulator.params={incentives: {}}",
    ]
    args = ["run", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "Incentive budget allocation" in (out / "report.html").read_text(encoding="utf-8")
    assert (out / "budget" / "allocation.parquet").exists()
    assert (out / "budget" / "certificate.json").exists()
    # the section chooses the campaign's policy as `eoca budget` does by default, and says which
    assert (out / "budget" / "selection.csv").exists()
    assert "policy chosen by validation" in (out / "report.html").read_text(encoding="utf-8")


def test_run_section_and_budget_command_share_the_default_selection_rule() -> None:
    import inspect

    from eoca.budget.select import DEFAULT_SELECTION, SELECTION_RULES
    from eoca.cli.budget import budget_cmd

    default = inspect.signature(budget_cmd).parameters["select"].default
    assert default == DEFAULT_SELECTION
    assert DEFAULT_SELECTION in SELECTION_RULES
