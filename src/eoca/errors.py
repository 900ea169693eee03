"""Error types raised at eoca's boundaries.

Every error a user can cause carries enough context (file, table, column, rows, constraint) to fix the input
without reading eoca's source. The CLI turns these into a one-paragraph message and exit code 2.
"""

from __future__ import annotations


class EocaError(Exception):
    """Base class for errors caused by the user's input or configuration."""


class DataValidationError(EocaError, ValueError):
    """A table or dataset does not satisfy its declared schema.

    The message names the table (and file), the column and the first offending rows.
    """


class ConfigError(EocaError, ValueError):
    """A YAML configuration or command-line override is invalid; the message names the key."""


class InfeasiblePlanError(EocaError, ValueError):
    """A delivery plan cannot be met by any allocation; the message says which constraint fails, with numbers."""
