"""Super-resolution: datasets, networks and metrics."""
