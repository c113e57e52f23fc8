"""The zoo benchmark's device option: named in every table, refused in one line without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from delete.bench.zoo_bench import main, write_zoo_tables


def _row(mode: str, drop: float) -> dict[str, object]:
    return {
        "model": "m",
        "norm": "none",
        "forget_class": 3,
        "forget_images": 400,
        "mode": mode,
        "test_forget": 0.0,
        "retain_before": 97.0,
        "retain_after": 97.0 - drop,
        "retain_drop": drop,
        "epochs": 10,
        "chosen": "lr=0.001 bn=frozen",
        "stop": "forgotten",
        "seconds": 1.0,
        "retrain_seconds": 10.0,
        "time_vs_retrain": 0.1,
        "retrain_retain_acc": 97.0,
        "device": "NVIDIA H200",
        "precision": "bf16 autocast",
    }


def test_tables_name_the_device_and_precision(tmp_path: Path) -> None:
    write_zoo_tables([_row("forget-only", 0.5), _row("selection", 0.25)], tmp_path)
    text = (tmp_path / "zoo.md").read_text()
    assert "_Device: NVIDIA H200, precision: bf16 autocast._" in text
    header = (tmp_path / "zoo.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["device", "precision"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "CUDA is not available" in err[-1]
    assert not any(tmp_path.iterdir())  # nothing was trained or written


def test_an_unknown_device_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--device", "tpu", "--out", str(tmp_path)])
    assert "'tpu' is not a torch device" in capsys.readouterr().err
