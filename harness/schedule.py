"""Launch orders: pure, seeded, recorded.

A cell is measured by several launches, each a fresh runner process with its own warm-up. On one
machine the launches of all its cells are interleaved in rounds: round k runs launch k of every
cell, in a fresh random order. A slow spell of the device (a neighbour, a thermal swing) then
lands on many cells a little instead of on one cell wholly, no variant is always measured first,
and the launches of one cell spread over the whole sweep, so their spread shows the device's
drift instead of hiding it. The order is drawn from the run's seed and the machine's name, so it
can be drawn again, and each launch's place in it is stored (`launches.seq`)."""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def rounds(items: Sequence[T], launches: int, seed: int, machine: str) -> list[tuple[T, int]]:
    """(item, launch index) in measuring order: `launches` rounds, each every item once in a random
    order, never one item twice in a row across a round's edge (when there are two or more)."""
    rng = random.Random(f"{seed}:{machine}")
    order: list[tuple[T, int]] = []
    for k in range(launches):
        this = list(items)
        rng.shuffle(this)
        if order and len(this) > 1 and this[0] is order[-1][0]:
            j = rng.randrange(1, len(this))
            this[0], this[j] = this[j], this[0]
        order += [(item, k) for item in this]
    return order


def ab_blocks(pairs: int) -> list[str]:
    """The arms of an interleaved A/B comparison, block by block: ABBA BAAB ABBA ... Within each
    block a linear drift cancels; alternating blocks keep either arm from always going first."""
    pattern = ("A", "B", "B", "A", "B", "A", "A", "B")
    return [pattern[i % len(pattern)] for i in range(2 * pairs)]
