"""One run: the trainer, its run directory, signals, environment and sinks."""
