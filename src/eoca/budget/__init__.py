"""Budget-constrained incentive allocation (docs/budget.md): which incentive, if any, each customer gets so that
total value is maximal and total cost stays within a budget.
"""

from __future__ import annotations

from eoca.budget.solver import BudgetCertificate, BudgetSolution, dual_bound, solve_budget

__all__ = ["BudgetCertificate", "BudgetSolution", "dual_bound", "solve_budget"]
