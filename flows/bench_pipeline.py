"""Pipeline overhead benchmark: seconds the whole ``unlearn`` flow adds to the bare unlearning.

``python -m flows.bench_pipeline --out bench_results`` bootstraps a throw-away project in a
temporary folder (so the repository's own registry is untouched), applies the sample request
once, and writes ``pipeline_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from flows.demo import measure_pipeline_overhead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.bench_pipeline", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures = measure_pipeline_overhead()
    figures["benchmark_wall_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline_overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(
        "pipeline overhead: {overhead_seconds:.1f} s on top of {unlearn_seconds:.1f} s of "
        "unlearning ({total_seconds:.1f} s per request)".format(**figures)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
