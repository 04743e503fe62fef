"""The wording every reviewer answer shares (questions.py, and sections that answer a
question of their own, such as sr.py): how an unanswerable question says so, how a tally of
verdicts is put in one sentence, how long a list of bullets may get."""
from __future__ import annotations

from harness.report import stats, verdicts

NOT_ANSWERED = "Not answered by this study"
MAX_BULLETS = 8  # per reviewer answer; the rest is in the named table


def tally(tests: list[verdicts.Test], a: str, b: str) -> str:
    """'A is significantly higher in 2, ... (adjusted over N comparisons[; caveat])'."""
    sizes = sorted({t.family_size for t in tests})
    text = verdicts.tally(tests, a, b)["text"]
    basis = (f"adjusted p < {stats.ALPHA:g}, Benjamini-Hochberg over the "
             f"{' and '.join(map(str, sizes))} test{'' if sizes == [1] else 's'} of the "
             "report's setting"
             + ("s" if len(sizes) > 1 else ""))
    caveat = verdicts.caveats(tests)
    return f"{text} ({basis}" + (f"; {caveat}" if caveat else "") + ")"


def bullets(items: list[str], where_: str) -> list[str]:
    if len(items) <= MAX_BULLETS:
        return items
    return items[:MAX_BULLETS] + [f"… {len(items) - MAX_BULLETS} more in {where_}."]


