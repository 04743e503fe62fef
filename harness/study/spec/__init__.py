"""Study specs: a TOML file -> validated, expanded runs (one resolved RunConfig each).

    [study]      name, description, question, gpu_hours, allow_unmatched, reproduction
    [recipe]     the shared recipe: every config key but the grid's (see `run --help`)
    [cell_recipe."W1/A1..A8"]  recipe keys for the cells a pattern names (reproduction only)
    [grid]       bits = [[W, A], ...], epochs = [...], seeds = [...], exclude, variants
    [variants.NAME]  method, options, cell_options, recipe (unmatched only), unmatched,
                 reference, bits, executor, description
    [executor]   resources and where to run (see EXECUTOR_TYPES)
    [scales.NAME]  epochs_divisor, min_epochs, max_seeds, set (e.g. `--scale smoke`)
    [report]     read by the report (its keys checked here too: harness/report/keys.py)

Reading (read.py: :func:`load_spec` in small named steps, every problem collected before
it raises :class:`SpecErrors`), what a spec may say and becomes (schema.py), a variant's
method (methods.py), per-cell settings (cells.py), expansion into runs (expand.py) and
whole-study checks and the plan (checks.py).

Per-cell settings: a variant's ``cell_options`` and a reproduction study's ``cell_recipe`` are
tables keyed by cell patterns, "W1/A32" or ranges "W1/A1..A8", "W1..W2/A32" (both ends
included, matching the grid's cells in the range). A run takes the variant's options (or the
recipe), then the values of every pattern that names its cell; ``--set`` overrides still win.
A key that does not parse, a pattern that names no cell, two patterns giving one key two values
in a cell, and a key set for some cells with no default for the others are errors. The
resolved values are what each run records (config.json) and what its id hashes.
"""
from harness.study.spec.cells import cell_name, parse_cell_pattern
from harness.study.spec.checks import print_plan
from harness.study.spec.read import load_spec
from harness.study.spec.schema import Run, SpecErrors, Study, Variant

__all__ = ["Run", "SpecErrors", "Study", "Variant", "cell_name", "load_spec",
           "parse_cell_pattern", "print_plan"]
