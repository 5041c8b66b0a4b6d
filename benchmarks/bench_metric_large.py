"""Memory bound of bundle_stats at N = 100,000 rows of D = 4,096 float32 (1.6 GB of input).

    python benchmarks/bench_metric_large.py

Prints time and the extra peak RSS (beyond the input) for all-distinct rows and for 10 bundles.
The docstring of bundle_stats promises one 64 MiB column block + O(N) ids.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import torch

from conflicting_bundles import bundle_stats


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(regime: str) -> None:
    """One regime per process: ru_maxrss is a high-water mark."""
    torch.set_num_threads(1)
    n, d = 100_000, 4096
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g)
    if regime == "distinct":
        a = torch.randn(n, d, generator=g)  # (N, D)
    else:
        a = torch.randn(10, d, generator=g)[torch.randint(0, 10, (n,), generator=g)]
    before = rss_mib()
    t = time.perf_counter()
    s = bundle_stats(a, y, w_max=1.3)
    dt = time.perf_counter() - t
    extra = rss_mib() - before
    print(
        f"{regime:10s} N={n} D={d}: {s.num_bundles} bundles, entropy {s.entropy:.4f}, "
        f"{dt:.2f} s, extra peak RSS {extra:.0f} MiB (input {a.numel() * 4 / 2**20:.0f} MiB)"
    )


def main() -> None:
    if len(sys.argv) > 1:
        run(sys.argv[1])
        return
    for regime in ("distinct", "10 bundles"):
        subprocess.run([sys.executable, __file__, regime], check=True)


if __name__ == "__main__":
    main()
