"""One path for every request: no branch on the task's type, every task declared by its spec.

The flows compose tasks; what differs per task lives in its ``TaskSpec``. These tests fail when
a flow (or the pipeline's task layer) starts asking which task it runs again, when a task's
spec is incomplete, and when the request record stops being a typed, frozen model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
import torch

from delete.applications import TASKS, get_task
from delete.data import DatasetBundle, ImageTensorDataset
from tasks.applications import prepare_task_run
from tasks.evaluation import load_gates
from tasks.record import RequestRecord

ROOT = Path(__file__).resolve().parents[2]

#: What a branch on the task's type looks like in this code base's history.
TASK_BRANCHES = [
    r"task(_name)?\s*[!=]=\s*(CLASSIFICATION|\"(classification|face|backdoor|segmentation)\")",
    r"isinstance\([^)]*(BackdoorData|SegmentationBundle)",
    r"\brun is None\b",
    r"\brun is not None\b",
]


@pytest.mark.parametrize(
    "path",
    [
        *sorted((ROOT / "flows").glob("*.py")),
        ROOT / "tasks" / "applications.py",
        ROOT / "tasks" / "evaluation.py",
    ],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_the_pipeline_never_branches_on_the_task(path: Path) -> None:
    code = path.read_text()
    # the one place that names the demo's models after their task is allowed to know them
    code = re.sub(r"def default_model_name\(.*?\n\n\n", "", code, flags=re.S)
    hits = [p for p in TASK_BRANCHES if re.search(p, code)]
    assert not hits, f"{path.name} branches on the task's type: {hits}"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_declares_what_the_pipeline_reads(name: str) -> None:
    spec = get_task(name)
    assert spec.metrics and set(spec.headline) <= set(spec.metrics)
    assert spec.per_class_metric and spec.per_class_label
    assert spec.default_gates
    # the defaults parse in the grammar the file is read with
    assert load_gates(None, name) == dict(spec.default_gates)
    for gate in spec.default_gates:
        metric = gate.removeprefix("max_drop_").removeprefix("max_")
        assert metric in (*spec.metrics, spec.per_class_metric), gate


def _bundle() -> DatasetBundle:
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 1, 2])
    train = ImageTensorDataset(torch.rand(8, 1, 4, 4), labels)
    test = ImageTensorDataset(torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    return DatasetBundle("toy", train, test, ["cat", "dog", "eel"])


def test_classification_runs_through_its_task_spec() -> None:
    run = prepare_task_run("classification", _bundle(), {}, ["dog"])
    assert run.forget_classes == (1,) and run.forget_class_names == ["dog"]
    assert run.manifest_indices == [1, 3, 6]  # the training files labelled "dog"
    assert len(run.forget_set) == 3 and len(run.retain_set) == 5  # type: ignore[arg-type]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    metrics = run.spec.evaluate(model, run.data, run.forget_classes, torch.device("cpu"))
    assert {"acc_forget", "acc_retain", "mia_auc", "mia_gap"} <= set(metrics)
    assert sorted(k for k in metrics if "/" in k) == [
        "class_acc/cat",
        "class_acc/dog",
        "class_acc/eel",
    ]
    assert metrics["mia_gap"] == pytest.approx(abs(metrics["mia_auc"] - 0.5))


def test_a_forget_class_without_training_images_is_refused() -> None:
    bundle = _bundle()
    only_test = DatasetBundle(
        "toy", bundle.train.subset(torch.tensor([0, 4])), bundle.test, bundle.class_names
    )
    with pytest.raises(Exception, match="no training samples"):
        prepare_task_run("classification", only_test, {}, ["dog"])


def test_the_request_record_is_typed_and_frozen() -> None:
    record = RequestRecord(request_id="r1", status="registered", version=2)
    done = record.with_(status="completed", alias="champion")
    assert (record.status, done.status, done.version) == ("registered", "completed", 2)
    with pytest.raises(pydantic.ValidationError):
        record.status = "completed"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        record.with_(stauts="completed")  # a misspelt field is refused, not silently added
    with pytest.raises(pydantic.ValidationError):
        record.with_(status="done")  # not a status a record can have
    assert RequestRecord.from_json_dict(done.to_json_dict()) == done
