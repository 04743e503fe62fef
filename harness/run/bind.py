"""Binding a deferred run (harness/stages.py): the chosen values applied to its untuned
config, its run directory prepared under the id of that config. Runs in the sweep (the
local executor, and SLURM when the trials were complete at submission) and in a deferred
run's own SLURM job when its dependencies are satisfied; the same inputs give the same run."""
from __future__ import annotations

from pathlib import Path

from harness import config, records, stages
from harness.config import RunConfig
from harness.errors import UserError
from harness.run import resolve
from harness.run.rundir import prepare_run_dir


class Blocked(UserError):
    """A deferred run cannot be bound: an input failed or is not there (the reason is kept
    in its slot file, and `status` shows it blocked)."""

    def __init__(self, message: str):
        super().__init__("stage", message)


def bind(sdir: Path, slot_id: str) -> tuple[str, RunConfig]:
    """(run id, resolved config) of a deferred run, its run directory prepared and its
    binding written; :class:`Blocked` (also written to the slot file) when its inputs do not
    allow it yet."""
    sdir = Path(sdir)
    slot = stages.read_slot(sdir, slot_id)
    if slot is None:
        raise Blocked(f"{stages.slot_path(sdir, slot_id)} is missing or unreadable; sweep "
                      "again to rewrite it")
    try:
        run_id, cfg, selection, chosen = resolve_slot(sdir, slot)
    except Blocked as e:
        stages.write_slot(sdir, {**slot, "blocked": str(e).removeprefix("stage: ")})
        raise
    prepare_run_dir(sdir / "runs" / run_id, cfg)
    slot.pop("blocked", None)
    stages.write_slot(sdir, {**slot, "binding": stages.binding(run_id, selection, chosen)})
    return run_id, cfg


def resolve_slot(sdir: Path, slot: dict) -> tuple[str, RunConfig, stages.Selection, dict]:
    """The config of a deferred run once its trials have chosen; Blocked when they have not
    (or its pretraining source is not completed)."""
    template = slot["template"]
    selection = stages.select(sdir, slot["trials"], template.get("task", config.DEFAULT_TASK))
    if selection.problem:
        raise Blocked(f"cannot choose {', '.join(slot['tuned'])}: {selection.problem}")
    source = (template.get("init") or {}).get("source")
    if source:
        rec = records.load_run(sdir / "runs" / source, with_metrics=False)
        if rec.status != "completed":
            raise Blocked(f"its pretraining source {source} is {rec.status}"
                          + (f" ({rec.problem})" if rec.problem else ""))
    chosen = dict(selection.chosen.params)
    flat = {**config.flatten(template), **chosen,
            "meta.tuned_by": stages.protocol_id(slot["trials"])}
    cfg = resolve.resolve(config.from_flat(flat))
    return f"{slot['name']}_{resolve.config_hash(cfg)[:8]}", cfg, selection, chosen
