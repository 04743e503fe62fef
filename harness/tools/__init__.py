"""Tools around the pipelines: bench, selftest, config and show."""
