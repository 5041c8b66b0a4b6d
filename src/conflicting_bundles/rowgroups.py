"""Exact grouping of equal rows (docs/method.md §2): 64-bit row hashes, verified exactly.

Imports torch (and numpy, whose sort is far faster on CPU). :func:`group_rows` partitions the
rows of ``transform(a)`` by exact equality (-0.0 == 0.0) in two stages:

1. *Raw stage*, on the bits of ``a`` (no transform): a 64-bit hash of 64 sampled columns
   (8 runs of 8, see :func:`sample_segments`) splits the rows into candidate groups; rows
   alone in their group are settled (a different hash proves a different row). Every other
   row is then compared bit for bit with its group's first row over all columns, in
   cache-sized row chunks (one XOR + one byte-wise max per element). Groups with a mismatch
   are re-split by a hash of the whole row and verified again; only if the whole-row hash
   collides too (probability ~2^-60 per pair) do their rows fall back to the sort-based
   column-block refinement (:func:`refine_sorted`).
2. *Transform stage*: an element-wise transform maps bitwise-equal rows to equal rows, so only
   one representative row per raw group is transformed (and -0.0 made +0.0) and grouped the
   same way (its sampled columns are kept from stage 1 when they fit in ``max_block_bytes``);
   the raw groups are merged accordingly.

Hashes only ever propose groups; every group the result contains has been checked element by
element, so the partition is exact whatever the hash does. All-distinct data costs the 64
sampled columns; duplicated data about three memory passes over the input.

On CPU tensors the work runs with at most ``CPU_THREADS`` torch threads (see
:func:`bounded_threads`): it is many small memory-bound kernels, which extra threads barely
speed up and which slow down badly when another process holds a core (issue 24). The result
does not depend on the thread count: every step is integer or element-wise arithmetic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = [
    "CPU_THREADS",
    "bounded_threads",
    "first_appearance_ids",
    "group_rows",
    "group_rows_exact",
    "refine_sorted",
    "row_hash",
]

#: Largest block (bytes) materialised at once by the fallback refinement.
CHUNK_BYTES = 64 * 2**20
#: Row-chunk size (bytes of float32 input) for hashing and verification: fits in L3, and big
#: enough that the per-chunk kernel launches do not dominate.
VERIFY_BYTES = 4 * 2**20
#: Row-chunk size (bytes of int32 sampled columns) of the first hash: few enough kernels per
#: row, temporaries small enough to be reused by malloc rather than page-faulted afresh.
HASH_BYTES = 512 * 2**10
#: Most torch intra-op threads used on CPU tensors (:func:`bounded_threads`); raise it on an
#: idle many-core machine with very large inputs if you must, results stay the same.
CPU_THREADS = 1
#: Columns hashed to propose the first groups: SEGMENTS runs of SEGMENT contiguous columns, the
#: first at column 0 and the others at fixed pseudo-random places, so that rows equal on a
#: leading stretch (ReLU zeros, padding) are still told apart by the first hash.
SEGMENT, SEGMENTS = 8, 8

# load(rows, c0, c1, out=None, segs=None) -> (len(rows), c1 - c0) int32 bits of those rows and
# columns (or of the column ranges ``segs``, side by side); when rows is a tensor, a new
# tensor (or ``out``, a buffer it may fill to avoid page faults).
Loader = Callable[..., torch.Tensor]
_MULTIPLIERS: dict[str, torch.Tensor] = {}  # device -> table, grown in blocks of _BLOCK
_BLOCK = 4096


@contextmanager
def bounded_threads(device: torch.device | str, limit: int | None = None) -> Iterator[None]:
    """Run the block with at most ``limit`` (default ``CPU_THREADS``) torch threads when
    ``device`` is the CPU; the caller's setting is restored afterwards, also on error."""
    limit = CPU_THREADS if limit is None else max(1, int(limit))
    prev = torch.get_num_threads()
    if torch.device(device).type != "cpu" or prev <= limit:
        yield
        return
    torch.set_num_threads(limit)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def first_appearance_ids(inverse: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Renumber group ids (N,) in [0, G) so that groups are numbered in order of their first
    sample."""
    n = inverse.numel()
    first = torch.full((num_groups,), n, dtype=torch.int64, device=inverse.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=inverse.device), reduce="amin")
    order = torch.argsort(first)  # group ids sorted by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_groups, device=inverse.device)
    return rank[inverse]


def _multipliers(d: int, device: torch.device) -> torch.Tensor:
    """(>= d,) int64 odd multipliers, column j's always the same (block b of 4096 columns comes
    from its own fixed seed), on every device."""
    key = str(device)
    have = _MULTIPLIERS.get(key)
    if have is None or have.numel() < d:
        blocks = []
        for b in range(-(-d // _BLOCK)):
            g = torch.Generator().manual_seed(0x5EED_B0D1E5 + b)
            blocks.append(torch.randint(-(2**62), 2**62, (_BLOCK,), generator=g) * 2 + 1)
        _MULTIPLIERS[key] = have = torch.cat(blocks).to(device)
    return have


def row_hash(bits: torch.Tensor, col0: int = 0, cols: torch.Tensor | None = None) -> torch.Tensor:
    """64-bit hash of each row of ``bits`` ((m, w) int32): sum_j bits_j * r_j (mod 2^64) with
    fixed odd multipliers r of the columns the block holds (col0..col0+w of the full rows, or
    ``cols``). Linear, so hashes of column blocks add up to the hash of the whole row.
    Returns (m,) int64."""
    if cols is None:
        r = _multipliers(col0 + bits.shape[1], bits.device)[col0 : col0 + bits.shape[1]]
    else:
        r = _multipliers(int(cols.max()) + 1, bits.device)[cols]
    return (bits.to(torch.int64) * r).sum(dim=1)


def _widens(t: torch.Tensor) -> bool:
    """Whether ``t`` ((m, w) int32) can be read as (m, w/2) int64 words."""
    return t.is_contiguous() and t.shape[1] % 2 == 0 and (t.stride(0) | t.storage_offset()) % 2 == 0


def _differ(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0-d uint8 tensor, nonzero iff x and y ((m, w) int32) differ somewhere. Overwrites y
    (a fresh contiguous copy): an in-place XOR keeps the work in cache, and the largest byte
    of the XOR (zero iff every bit agrees) is a reduction twice as fast as count_nonzero."""
    if _widens(x) and _widens(y):  # the same bits as int64 words: half the XORs
        x, y = x.view(torch.int64), y.view(torch.int64)
    return y.bitwise_xor_(x).view(torch.uint8).amax()


def _chunks(m: int, d: int, block_bytes: int) -> tuple[int, int]:
    """(rows, columns) per chunk so that one int32 chunk stays within the verify budget."""
    budget = max(4, min(VERIFY_BYTES, block_bytes)) // 4  # elements
    cols = min(d, budget)
    return max(1, min(m, budget // cols)), cols


def _hash_rows(load: Loader, idx: torch.Tensor | slice, m: int, d: int, bb: int) -> torch.Tensor:
    """Whole-row hash (m,) of the rows ``idx``, chunk by chunk."""
    cr, cc = _chunks(m, d, bb)
    out = []
    for r0 in range(0, m, cr):
        sub = idx[r0 : r0 + cr]
        h = None
        for c0 in range(0, d, cc):
            part = row_hash(load(sub, c0, min(d, c0 + cc)), c0)
            h = part if h is None else h + part
        out.append(h)
    return torch.cat(out)


def _take(rows: torch.Tensor | slice, r0: int, r1: int) -> torch.Tensor | slice:
    return slice(r0, r1) if isinstance(rows, slice) else rows[r0:r1]


def _mismatch(load: Loader, rows: torch.Tensor | slice, reps: torch.Tensor, d: int, bb: int):
    """(p,) bool: row rows[i] differs (bitwise) from row reps[i] somewhere (rows: the index
    tensor, or ``slice(0, p)`` for all rows in order)."""
    p = reps.numel()
    cr, cc = _chunks(p, d, bb)
    buf = torch.empty(cr, cc, dtype=torch.int32, device=reps.device) if cc == d else None
    flags, spans = [], []  # flags: nonzero where a chunk has a mismatch
    for r0 in range(0, p, cr):
        for c0 in range(0, d, cc):
            c1 = min(d, c0 + cc)
            x = load(_take(rows, r0, r0 + cr), c0, c1)
            r = reps[r0 : r0 + cr]
            y = load(r, c0, c1, out=None if buf is None else buf[: r.numel()])
            flags.append(_differ(x, y))
            spans.append((r0, c0, c1))
    bad = torch.zeros(p, dtype=torch.bool, device=reps.device)
    for (r0, c0, c1), k in zip(spans, torch.stack(flags).tolist(), strict=True):  # one device sync
        if k:
            x = load(_take(rows, r0, r0 + cr), c0, c1)
            y = load(reps[r0 : r0 + cr], c0, c1)
            bad[r0 : r0 + cr] |= (x != y).any(dim=1)
    return bad


def _all_distinct(h: torch.Tensor) -> bool:
    """Whether the values of ``h`` (m,) int64 are pairwise distinct: one sort (numpy's on CPU,
    an order of magnitude faster than torch's there)."""
    s = np.sort(h.numpy()) if h.device.type == "cpu" else torch.sort(h).values
    return not bool((s[1:] == s[:-1]).any())


def _split(gid: torch.Tensor | None, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine groups ``gid`` (m,) (None: one group) by hashes ``h`` (m,): (new ids (m,) in
    [0, k), counts (k,))."""
    if gid is None:
        _, inv, counts = torch.unique(h, return_inverse=True, return_counts=True)
        return inv, counts
    _, ih = torch.unique(h, return_inverse=True)
    key = gid * (int(ih.max()) + 1) + ih  # exact pair encoding, no collision
    _, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return inv, counts


def refine_sorted(load: Loader, rows: torch.Tensor, d: int, block_bytes: int) -> torch.Tensor:
    """Exact grouping of the rows ``rows`` by column-block refinement with sorts (the fallback
    after a hash collision): each round reads the next block (16, 64, 256, ... columns) of the
    rows still sharing a group and splits groups by ``torch.unique(dim=0)`` of (group, bits).
    Returns (len(rows),) int64 ids (not renumbered)."""
    m = rows.numel()
    gid = torch.zeros(m, dtype=torch.int64, device=rows.device)
    active = torch.arange(m, device=rows.device)
    col, width, num = 0, 16, 1
    while col < d and active.numel():
        w = min(width, d - col, max(1, block_bytes // (8 * active.numel())))
        bits = load(rows[active], col, col + w)  # (n_active, w) int32
        key = torch.cat([gid[active, None], bits.to(torch.int64)], dim=1)
        _, inv = torch.unique(key, dim=0, return_inverse=True)
        counts = torch.bincount(inv)
        gid[active] = num + inv
        num += counts.numel()
        active = active[counts[inv] > 1]
        col += w
        width *= 4
    return gid


def sample_segments(d: int) -> list[tuple[int, int]]:
    """The column ranges [c0, c1) the first hash reads: all of a short row, else SEGMENTS runs
    of SEGMENT columns (column 0 and fixed pseudo-random offsets, the same for every call)."""
    if d <= SEGMENT * SEGMENTS:
        return [(0, d)]
    starts = list(range(SEGMENT, d - SEGMENT + 1, SEGMENT))
    picked = random.Random(d).sample(starts, min(len(starts), SEGMENTS - 1))
    return [(c, c + SEGMENT) for c in sorted([0, *picked])]


def _sample_hash(load: Loader, m: int, d: int, segs, cols: torch.Tensor, bb: int, keep: bool):
    """The first hash (m,) int64 of the sampled columns ``segs`` (indices ``cols``) of m rows
    read through ``load``, chunk by chunk; and, if ``keep``, those columns (m, S) int32."""
    step = max(1, min(HASH_BYTES, bb) // (4 * cols.numel()))
    kept = torch.empty(m, cols.numel(), dtype=torch.int32, device=cols.device) if keep else None
    hs = []
    for s in range(0, m, step):
        buf = None if kept is None else kept[s : s + step]
        bits = load(slice(s, s + step), 0, d, out=buf, segs=segs)
        if buf is not None and bits.data_ptr() != buf.data_ptr():
            buf.copy_(bits)
        hs.append(row_hash(bits, cols=cols))
    return torch.cat(hs), kept


def _exact_groups(
    load: Loader, m: int, d: int, bb: int, device, h: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Exact partition of m rows of d int32 columns read through ``load``, starting from the
    groups that ``h`` (m,), the hash of the sampled columns, proposes.
    Returns (ids (m,) numbered by first appearance, number of groups)."""
    if _all_distinct(h):  # every row alone: distinct rows, numbered in order
        return torch.arange(m, device=device), m
    gid, counts = _split(None, h)
    num = counts.numel()
    pending = torch.nonzero(counts[gid] > 1).flatten()  # rows that share a proposed group
    rounds = 0
    while pending.numel():
        first = torch.full((num,), m, dtype=torch.int64, device=device)
        first.scatter_reduce_(0, gid[pending], pending, reduce="amin")
        rows = slice(0, m) if pending.numel() == m else pending  # all rows: plain views
        bad = _mismatch(load, rows, first[gid[pending]], d, bb)
        if not bool(bad.any()):
            break
        dirty = torch.unique(gid[pending[bad]])
        members = pending[torch.isin(gid[pending], dirty)]
        if rounds == 0:  # the sampled columns were not enough: hash whole rows
            sub, cnt = _split(gid[members], _hash_rows(load, members, members.numel(), d, bb))
        else:  # the whole-row hash collided: exact sort-based refinement
            sub = refine_sorted(load, members, d, bb)
            _, sub, cnt = torch.unique(sub, return_inverse=True, return_counts=True)
        gid[members] = num + sub
        num += cnt.numel()
        pending = members[cnt[sub] > 1] if rounds == 0 else members[:0]
        rounds += 1
    _, gid = torch.unique(gid, return_inverse=True)
    g = int(gid.max()) + 1
    return first_appearance_ids(gid, g), g


def pick(
    x: torch.Tensor, rows: torch.Tensor | slice, segs: list[tuple[int, int]], out=None
) -> torch.Tensor:
    """The column ranges ``segs`` of x[rows], side by side (into ``out`` if given), without
    copying whole rows (slices and a cat: far faster than index_select along columns)."""
    parts = [x[rows, c0:c1] for c0, c1 in segs]
    if out is not None and out.shape[0] == parts[0].shape[0]:
        return torch.cat(parts, dim=1, out=out)
    return torch.cat(parts, dim=1)


def group_rows_exact(
    a: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_block_bytes: int = CHUNK_BYTES,
) -> tuple[torch.Tensor, int, torch.Tensor]:
    """:func:`group_rows` that also returns ``reps`` (R,) int64: rows such that every row of
    ``a`` is bitwise equal to one of them (so, e.g., ``a`` is finite iff ``a[reps]`` is).
    Runs under :func:`bounded_threads`."""
    with bounded_threads(a.device):
        return _group_rows_exact(a, transform, max_block_bytes)


def _group_rows_exact(
    a: torch.Tensor, transform, max_block_bytes: int
) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The work of :func:`group_rows_exact`."""
    n, d = a.shape
    dev = a.device
    if n == 1 or d == 0:
        zero = torch.zeros(n, dtype=torch.int64, device=dev)
        return zero, 1, zero[:1]
    a = a if a.dtype == torch.float32 else a.to(torch.float32)  # the metric is on float32
    raw = a.view(torch.int32)
    segs = sample_segments(d)
    cols = torch.cat([torch.arange(c0, c1) for c0, c1 in segs]).to(dev)

    def load_raw(idx, c0: int, c1: int, out=None, segs=None) -> torch.Tensor:
        if segs is not None:
            return pick(raw, idx, segs, out=out)
        if isinstance(idx, slice):
            return raw[idx, c0:c1]
        if (c0, c1) != (0, d):
            return raw[idx, c0:c1]
        return raw.index_select(0, idx) if out is None else torch.index_select(raw, 0, idx, out=out)

    keep = n * cols.numel() * 4 <= max_block_bytes  # keep the sampled columns for stage 2
    h, sampled = _sample_hash(load_raw, n, d, segs, cols, max_block_bytes, keep)
    raw_ids, g_raw = _exact_groups(load_raw, n, d, max_block_bytes, dev, h)
    reps = torch.arange(n, device=dev)
    if g_raw < n:  # first row of each raw group, increasing
        reps = torch.full((g_raw,), n, dtype=torch.int64, device=dev).scatter_reduce_(
            0, raw_ids, reps, reduce="amin"
        )

    def load_t(idx, c0: int, c1: int, out=None, segs=None) -> torch.Tensor:
        if g_raw < n:  # representative i is row reps[i] of a: no copy of the rows
            idx = reps[idx]
        if segs is None:
            blk = a[idx, c0:c1]
        else:  # the sampled columns: from stage 1 if kept
            blk = pick(a, idx, segs) if sampled is None else sampled[idx].view(torch.float32)
        if transform is not None:
            blk = transform(blk).to(torch.float32)
        return (blk + 0.0).view(torch.int32)  # -0.0 + 0.0 == +0.0

    h, _ = _sample_hash(load_t, g_raw, d, segs, cols, max_block_bytes, False)
    ids_t, g = _exact_groups(load_t, g_raw, d, max_block_bytes, dev, h)
    return (ids_t if g_raw == n else ids_t[raw_ids]), g, reps


def group_rows(
    a: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_block_bytes: int = CHUNK_BYTES,
) -> tuple[torch.Tensor, int]:
    """Partition the rows of ``transform(a)`` ((N, D) float32) by exact equality (-0.0 == 0.0).

    ``transform`` is element-wise (applied to column blocks of representative rows only).
    Extra memory: O(N) ids plus cache-sized chunks (the fallback, and the sampled columns
    kept for stage 2: blocks of at most ``max_block_bytes`` each). Returns (ids (N,) int64
    numbered by first appearance, number of groups). Exact: see the module docstring.
    """
    ids, g, _ = group_rows_exact(a, transform, max_block_bytes)
    return ids, g
