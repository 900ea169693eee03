"""Evaluation: offline model metrics, the simulated online A/B test and off-policy estimates."""
