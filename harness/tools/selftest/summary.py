"""The selftest's written summary: selftest.json and selftest.md."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import files
from harness.tools.selftest.checks import Summary


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]]


def to_markdown(s: Summary) -> str:
    env = s.env
    failed = s.failed()
    verdict = (f"**{len(failed)} of {len(s.checks)} checks FAILED**" if failed else
               f"all {len(s.checks)} checks passed")
    lines = [f"# slbench selftest: {verdict}", "",
             f"{s.started}, {s.wall_s:.0f} s. Device **{env.get('device_name')}** "
             f"(GPUs on the node: {env.get('gpu_count')}; driver {env.get('driver')}; "
             f"compute capability {env.get('compute_capability', '-')}; "
             f"{env.get('gpu_memory_gb', '-')} GB), torch {env.get('torch')}, CUDA "
             f"{env.get('cuda')}, cuDNN {env.get('cudnn')}, python {env.get('python')}, "
             f"commit {env.get('harness_commit')}, host {env.get('hostname')}.", "",
             f"Settings: {s.settings.get('dataset')} ({s.settings.get('data_root') or 'built in'}"
             f"), {s.settings.get('model')} width {s.settings.get('width')}, batch "
             f"{s.settings.get('batch_size')}, {s.settings.get('epochs')} epoch(s) per check "
             f"run, training images {s.settings.get('train_images') or 'all'}.", "",
             "## Checks", "", *_table([asdict(c) for c in s.checks],
                                      ["section", "name", "status", "detail"]), ""]
    if s.epoch_times:
        lines += ["## fp epoch times", "", *_table(s.epoch_times, [
            "variant", "median_epoch_s", "images_per_s", "warmup_s", "steps_per_epoch",
            "train_images"]), ""]
    if s.ratios:
        lines += ["## Step time of every method over fp (harness.tools.bench)", "",
                  *_table(s.ratios, list(s.ratios[0])), ""]
    if s.packing:
        lines += ["## Runs per device (aggregate images/s of K runs at once)", "",
                  *_table([{"K": r["k"], "images_per_s": r["images_per_s"]} for r in s.packing],
                          ["K", "images_per_s"]), ""]
    targets = [f"- {t['status']}: {t['target']}" for t in s.targets] or ["- none measured"]
    skipped = [f"- {k['what']}: {k['reason']}" for k in s.skipped] or ["- nothing"]
    lines += ["## Targets (reported, never a failed check)", "", *targets, "",
              "## Skipped", "", *skipped, ""]
    if s.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in s.notes], ""]
    lines += ["## Section times (s)", "", *[f"- {k}: {v:.1f}" for k, v in s.section_s.items()],
              ""]
    return "\n".join(lines)


def write(s: Summary, out: Path) -> tuple[Path, Path]:
    js, md = out / "selftest.json", out / "selftest.md"
    files.atomic_write_json(js, asdict(s))
    files.atomic_write_text(md, to_markdown(s))
    return js, md
