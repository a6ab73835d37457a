"""Plain-text tables for the command line (`ndkd run`, `ndkd models`, `ndkd recipes`, seed groups)."""

from __future__ import annotations


def format_text_table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns of ``rows`` (the first is the header), a dashed line under the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
