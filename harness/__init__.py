"""slbench harness: config, data, models, the training core, run records, sweeps, reports."""
