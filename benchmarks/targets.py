"""The targets table every benchmark ends with: one row per measure, and the exit code (1 when one is missed)."""

from __future__ import annotations

from collections.abc import Sequence


def print_targets(rows: Sequence[tuple[str, str, str, bool]], value_width: int = 24, target_width: int = 8) -> int:
    """Print ``(measure, value, target, ok)`` rows as a table; return 0 when every row is ok, else 1."""
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<{value_width}} {'target':<{target_width}} ok")
    for name, value, target, ok in rows:
        print(f"{name:<{width}}  {value:<{value_width}} {target:<{target_width}} {'yes' if ok else 'MISSED'}")
    return 0 if all(r[3] for r in rows) else 1
