"""A token's ``devices`` claim (ids and ``*``-globs) as a SQL condition with bound values.

Reads that are capped (a snapshot, a ``since`` replay) must drop the rows the token may not
see *before* the LIMIT: filtered afterwards, another device's rows can fill the cap and leave
the caller none of its own. The claim never becomes SQL text: ids go in a ``text[]``
parameter compared with ``= ANY``, globs are turned into LIKE patterns (``%`` and ``_``
escaped, ``*`` -> ``%``) and go in a second ``text[]`` parameter compared with ``LIKE ANY``.
Only ``*`` is special in a claim (``bridge.auth.glob_to_regex``); LIKE patterns here match
the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence

# LIKE's default escape character; escaping it first keeps a literal backslash literal.
_ESCAPE = "\\"


def like_pattern(glob: str) -> str:
    """The LIKE pattern matching exactly the ids ``glob`` matches (only ``*`` is special)."""
    escaped = (
        glob.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )
    return escaped.replace("*", "%")


def claim_values(claim: Sequence[str] | None) -> tuple[list[str] | None, list[str]]:
    """The two parameters of :func:`claim_condition`: exact ids (``None`` when the claim allows
    every device) and LIKE patterns for its globs."""
    if claim is None or "*" in claim:
        return None, []
    exact = [d for d in claim if "*" not in d]
    patterns = [like_pattern(d) for d in claim if "*" in d]
    return exact, patterns


def claim_condition(exact: int, patterns: int, column: str = "device_id") -> str:
    """``column`` allowed by the claim whose :func:`claim_values` are bound as ``$exact`` and
    ``$patterns``. ``column`` is always a literal of the caller, never client input."""
    return (
        f"(${exact}::text[] IS NULL OR {column} = ANY(${exact}::text[]) "
        f"OR {column} LIKE ANY(${patterns}::text[]))"
    )
