"""What the terminal shows of a run: a bar over the steps of an epoch, or a line per epoch."""
from __future__ import annotations

import sys
from typing import Callable

from tqdm import tqdm

from harness.config import RunConfig


class Display:
    """What the terminal shows of a run. ``bar`` (the default on a terminal): a tqdm bar over
    the steps of the current epoch, with each finished epoch's line left above it; ``line``
    (the default otherwise: logs, pipes, jobs): one line per epoch; ``none``. Only rank 0
    of a distributed run shows anything."""

    def __init__(self, cfg: RunConfig, echo: Callable[[str], None], steps: int, main: bool):
        mode = cfg.progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "line"
        self.mode = mode if main else "none"
        self.echo, self.steps, self.epochs, self.bar = echo, steps, cfg.epochs, None

    def say(self, line: str) -> None:
        if self.mode != "none":
            tqdm.write(line) if self.mode == "bar" else self.echo(line)

    def epoch_start(self, epoch: int) -> None:
        if self.mode == "bar":
            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}",
                            unit="step", leave=False, dynamic_ncols=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def epoch_end(self, line: str) -> None:
        self.close()
        self.say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
