"""Model specs, the one checkpoint format and the architecture registry."""
