"""Arguments of ``PYTHONPATH=scripts python -m gpucheck`` and the order of the parts."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .common import PARTS, Settings, environment, smoke_settings, write_part

DEFAULT_OUT = Path("benchmarks/results/gpu")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="PYTHONPATH=scripts python -m gpucheck",
        description="Correctness, speed and paper-scale checks on one CUDA device "
        "(docs/scale-out.md).",
    )
    ap.add_argument("--out", type=Path, default=None, help=f"JSON folder (default {DEFAULT_OUT})")
    ap.add_argument("--data-dir", default=None, help="data directory (e.g. the --pack-data one)")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole script")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, seconds (CI)")
    pack_help = "write MNIST + Fashion-MNIST into DIR (for the device's carry)"
    ap.add_argument("--pack-data", type=Path, default=None, metavar="DIR", help=pack_help)
    return ap.parse_args(argv)


def run_check(s: Settings) -> dict:
    """Run the parts of ``s`` in order; returns {part: body}. A part that cannot be imported
    (a module missing on the GPU machine) or that raises still writes its JSON, with the
    error, and the next part runs."""
    import importlib
    import traceback

    import torch

    device = torch.device(s.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "error: no CUDA device is visible to this torch "
            f"({torch.__version__}, built for CUDA {torch.version.cuda}). Check with "
            "`python -c 'import torch; print(torch.cuda.is_available())'`; on a CPU use --smoke."
        )
    if s.smoke:
        torch.set_num_threads(1)
    env = environment(device)
    print(f"GPU check on {env['device_name']} ({env['device']}), torch {env['torch']}, "
          f"CUDA {env['cuda']}, budget {s.budget_s:.0f} s", flush=True)  # fmt: skip
    done = {}
    for part in s.parts:
        t = time.perf_counter()
        print(f"== part {part} ({s.left():.0f} s left)", flush=True)
        try:
            done[part] = importlib.import_module(f".{part}", __package__).run(s, device)
        except Exception as e:  # noqa: BLE001 - record it, go on with the next part
            tail = traceback.format_exc().strip().splitlines()[-6:]
            done[part] = {"error": f"{type(e).__name__}: {e}", "traceback": tail}
            write_part(s, part, device, done[part])
        print(f"== part {part}: {time.perf_counter() - t:.1f} s", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.pack_data is not None:
        from .pack import pack_data

        sizes = pack_data(args.pack_data, args.data_dir)
        for name, n in sizes.items():
            print(f"{n / 2**20:8.1f} MiB  {args.pack_data / name}")
        print(f"{sum(sizes.values()) / 2**20:8.1f} MiB in all; carry {args.pack_data}")
        return 0
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"error: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}.",
              file=sys.stderr)  # fmt: skip
        return 2
    out = args.out or DEFAULT_OUT
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts
    if args.smoke:
        s = smoke_settings(out, args.data_dir)
    else:
        s = Settings(out=out, device=args.device, data_dir=args.data_dir, budget_s=args.budget)
    s.parts = parts
    run_check(s)
    return 0
