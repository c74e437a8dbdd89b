"""``realfork stress``: stressors, schedule noise, checking while running,
findings with reproducers, and metrics."""
