"""Finding the messages a database refuses in a batch it refused, in few transactions.

Pure control flow: the caller's ``attempt(lo, hi)`` writes items ``[lo, hi)`` in one
transaction and says whether it committed. Halving instead of going item by item means one bad
message in a batch of n costs about 1.5 log2(n) extra transactions instead of n, and every good
item is still committed exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Attempt = Callable[[int, int], Awaitable[bool]]


async def isolate(count: int, attempt: Attempt) -> list[int]:
    """Commit every item of ``[0, count)`` that can be, after the whole range failed as one.

    Returns the indexes of the items that failed on their own, in order. An item is only
    reported after an attempt of it alone failed: a failure that needs two items together
    (none is known in this schema, but inference could be wrong) then costs extra attempts,
    never a good item.
    """
    failed: list[int] = []
    if count > 0:
        await _split(0, count, attempt, failed, tried=True)
    return failed


async def _split(lo: int, hi: int, attempt: Attempt, failed: list[int], *, tried: bool) -> None:
    """``[lo, hi)`` fails as a whole: ``tried`` when an attempt of exactly it failed, else
    inferred (its sibling committed while their parent failed)."""
    if hi - lo == 1:
        if tried or not await attempt(lo, hi):
            failed.append(lo)
        return
    mid = (lo + hi) // 2
    if await attempt(lo, mid):
        # The left half committed, so the failure lies in the right half: halve it without
        # trying it whole (one transaction less per level).
        await _split(mid, hi, attempt, failed, tried=False)
        return
    await _split(lo, mid, attempt, failed, tried=True)
    if not await attempt(mid, hi):
        await _split(mid, hi, attempt, failed, tried=True)
