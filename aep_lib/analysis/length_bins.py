"""Length bins of scored texts: a detector's human-text scores spread less as texts grow longer, so
``aep_lib.analysis.calibration`` keeps one threshold per bin ``[e_i, e_(i+1))`` of scored tokens (the last bin
closed), and a text is judged against the bin its length falls in."""

from __future__ import annotations

import numpy as np

LENGTH_EDGES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)  # tokens; about x1.5 apart


def length_edges(max_tokens: int, edges=LENGTH_EDGES) -> tuple[int, ...]:
    """The bin edges (tokens) up to ``max_tokens``: ``edges`` below it, then ``max_tokens`` itself (an edge
    less than a quarter below ``max_tokens`` is dropped rather than leave a sliver of a bin)."""
    max_tokens = int(max_tokens)
    inner = [int(e) for e in edges if int(e) < max_tokens]
    while inner and max_tokens < 1.25 * inner[-1] and len(inner) > 1:
        inner.pop()
    if not inner:
        raise ValueError(f"max_tokens {max_tokens} leaves no length bin (the shortest starts at {edges[0]})")
    return tuple(inner) + (max_tokens,)


def bin_bounds(edges, i: int) -> tuple[int, int]:
    """``(low, high)`` of bin ``i``, both inclusive: ``[e_i, e_(i+1) - 1]``, the last one ``[e_-2, e_-1]``."""
    last = len(edges) - 2
    return int(edges[i]), int(edges[i + 1] if i == last else edges[i + 1] - 1)


def bin_of(n_tokens: int, edges) -> tuple[int, str]:
    """``(bin index, coverage)`` of a text of ``n_tokens`` scored tokens; coverage is ``within``, or
    ``shorter``/``longer`` than the bins reach (then the first/last bin is used)."""
    if n_tokens < edges[0]:
        return 0, "shorter"
    if n_tokens > edges[-1]:
        return len(edges) - 2, "longer"
    i = int(np.searchsorted(np.asarray(edges), n_tokens, side="right")) - 1
    return min(i, len(edges) - 2), "within"


def bin_lengths(n_tokens: int, edges, seed_key) -> list[tuple[int, int]]:
    """``[(bin, length)]`` for a text of ``n_tokens``: one length per bin it reaches, uniform on
    ``[low, min(high, n_tokens)]``, drawn from a generator seeded by ``seed_key`` (a tuple of ints)."""
    rng = np.random.default_rng(list(seed_key))
    out = []
    for i in range(len(edges) - 1):
        low, high = bin_bounds(edges, i)
        if n_tokens < low:
            break
        out.append((i, int(rng.integers(low, min(high, n_tokens) + 1))))
    return out
