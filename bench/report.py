"""Bench output: a Markdown table, as docs/performance.md records it."""
from __future__ import annotations

from typing import Iterable, Sequence


def print_markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    print("\n| %s |" % " | ".join(header))
    print("|%s" % ("---|" * len(header)))
    for row in rows:
        print("| %s |" % " | ".join(str(cell) for cell in row))
