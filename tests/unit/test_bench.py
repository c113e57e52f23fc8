"""The benchmark end to end on a tiny configuration (digits, 1 seed, 1 scenario, 1-2 epochs)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from delete.bench import RESULT_COLUMNS, BenchConfig, run_benchmark
from delete.bench.cli import build_parser, config_from_args
from delete.metrics import REPORT_METRICS


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_benchmark_writes_results_summary_markdown_and_plot(tmp_path: Path) -> None:
    config = BenchConfig(
        dataset="digits",
        seeds=(0,),
        scenarios=((3,),),
        methods=("delete", "gradient_ascent", "boundary_shrink"),
        train_epochs=1,
        method_hparams={
            "delete": {"epochs": 2, "lr": 0.01},
            "gradient_ascent": {"epochs": 1},
            "boundary_shrink": {"no_such_hparam": 1},  # must fail alone, not sink the run
        },
        mia_max_shadow=100,
        threads=1,
        out_dir=tmp_path,
        progress=False,
    )
    result = run_benchmark(config)

    header, rows = _read_csv(tmp_path / "results.csv")
    assert header == list(RESULT_COLUMNS)
    assert [r["method"] for r in rows] == [
        "original",
        "retrain",
        "delete",
        "gradient_ascent",
        "boundary_shrink",
    ]
    by_method = {r["method"]: r for r in rows}
    assert by_method["boundary_shrink"]["status"] == "failed"
    assert "no_such_hparam" in by_method["boundary_shrink"]["error"]
    for name in ("original", "retrain", "delete", "gradient_ascent"):
        row = by_method[name]
        assert row["status"] == "ok", row["error"]
        for key in REPORT_METRICS:
            assert 0.0 <= float(row[key]) <= 100.0
    assert float(by_method["retrain"]["time_ratio"]) == 1.0
    assert float(by_method["delete"]["time_ratio"]) > 0.0
    assert by_method["retrain"]["needs_retain"] == "True"
    assert by_method["delete"]["needs_retain"] == "False"
    assert float(by_method["retrain"]["acc_test_forget"]) == 0.0  # never saw class 3

    header, summary = _read_csv(tmp_path / "summary.csv")
    assert header[:4] == ["method", "needs_retain", "runs", "failed"]
    for key in ("h_mean", "acc_test_forget", "mia_svc_member_rate", "seconds", "time_ratio"):
        assert f"{key}_mean" in header and f"{key}_std" in header
    assert [s["method"] for s in summary] == [r["method"] for r in rows]

    markdown = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert markdown == result.markdown + "\n"
    assert markdown.startswith("| Method |")
    assert "retrain †" in markdown and "**delete**" in markdown
    assert (tmp_path / "per_class_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "models" / "original_seed0.safetensors").is_file()


def test_cli_arguments_map_onto_the_config() -> None:
    args = build_parser().parse_args(
        ["--quick", "--dataset", "digits", "--seeds", "2", "--methods", "delete", "--out", "x"]
    )
    config = config_from_args(args)
    assert config.quick and config.dataset == "digits"
    assert config.seeds == (0, 1) and config.methods == ("delete",)
    assert config.out_dir == Path("x") and len(config.scenarios) == 1 and config.threads == 1
    full = config_from_args(build_parser().parse_args([]))
    assert len(full.seeds) >= 3 and len(full.scenarios) >= 4 and not full.quick


def test_unknown_method_is_refused_before_any_training(tmp_path: Path) -> None:
    from delete.errors import UnknownMethodError

    with pytest.raises(UnknownMethodError, match="no_such_method"):
        run_benchmark(BenchConfig(dataset="digits", methods=("no_such_method",), out_dir=tmp_path))
    assert not any(tmp_path.iterdir())
