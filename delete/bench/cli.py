"""``python -m delete.bench``: argument parsing around :func:`run_benchmark`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from delete.bench.config import BenchConfig
from delete.bench.runner import run_benchmark

__all__ = ["main", "build_parser", "config_from_args"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of the benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m delete.bench",
        description="Benchmark DELETE against every registered unlearning method.",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 scenario (< 10 min on CPU)")
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: fastest when other jobs share a small CPU; 0: torch's)",
    )
    parser.add_argument("--no-mia", action="store_true", help="skip the membership attacks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Map parsed arguments onto a :class:`BenchConfig` (quick preset or full defaults)."""
    config = BenchConfig.quick_preset() if args.quick else BenchConfig()
    changes: dict[str, object] = {
        "dataset": args.dataset,
        "out_dir": args.out,
        "device": args.device,
        "threads": args.threads if args.threads > 0 else None,
        "mia": not args.no_mia,
        "progress": not args.no_progress,
    }
    if args.seeds is not None:
        if args.seeds < 1:
            raise SystemExit("--seeds must be at least 1")
        changes["seeds"] = tuple(range(args.seeds))
    if args.methods is not None:
        changes["methods"] = tuple(args.methods)
    return replace(config, **changes)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from command-line arguments; print the summary table; return 0."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    print(config.describe(), flush=True)
    if config.quick:
        scenarios = " and ".join("+".join(map(str, s)) for s in config.scenarios)
        print(
            f"quick mode: seed {config.seeds[0]} and forget {scenarios} only (the full "
            "benchmark is 3 seeds x 4 scenarios); every method with its full recipe; "
            f"SVC attack on <= {config.mia_max_shadow} shadow samples a side",
            flush=True,
        )
    started = time.perf_counter()
    result = run_benchmark(config)
    print()
    print(result.markdown)
    print()
    for role, path in result.files.items():
        print(f"{role}: {path}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    failed = [r for r in result.rows if r["status"] != "ok"]
    for row in failed:
        print(
            f"FAILED {row['method']} seed {row['seed']} forget {row['scenario']}: {row['error']}",
            file=sys.stderr,
        )
    return 0
