"""eoca."""
