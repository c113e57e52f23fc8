"""Bad input, end to end: every case goes through the inbox and a real ``process_inbox`` run.

Each case must end with all four outcomes of the robustness issue:

1. a clear one-line error naming the problem;
2. the request file in ``requests/failed/`` with a ``.reason.txt`` saying why;
3. an audit record of the rejection (``request.rejected`` or ``request.failed``), in a log that
   still verifies;
4. the registry unchanged: same versions, same aliases, ``@champion`` included.

Malformed files are dropped straight into ``inbox/`` (``submit`` would refuse them before the
pipeline sees them); valid-looking requests go through :meth:`Inbox.submit`. Cases that need a
broken environment (DVC objects gone, a tampered checkpoint, absurd ONNX tolerances, a dataset
version without the class) break the test's own copy of the project root.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.flows._robust import registry_snapshot
from tests.flows.conftest import MODEL, write_request

Setup = Callable[[Any, Path, pytest.MonkeyPatch], AbstractContextManager[None]]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        name: Test id, also the request id (or the file name of a dropped file).
        expect: Text the one-line error must contain (names the problem).
        status: ``rejected`` (cannot be honoured as written) or ``failed`` (pipeline refused).
        fields: Request fields (``write_request`` YAML) overriding the defaults.
        raw: Bytes to drop straight into the inbox instead of submitting a request.
        suffix: File extension of a dropped file.
        setup: Breaks the environment for the case and repairs it afterwards.
    """

    name: str
    expect: str
    status: str = "rejected"
    fields: dict[str, Any] = field(default_factory=dict)
    raw: Callable[[Path], bytes] | None = None
    suffix: str = ".yaml"
    setup: Setup | None = None


def _text(tmp: Path, request_id: str, **fields: Any) -> str:
    return write_request(tmp / "draft.yaml", request_id, **fields).read_text()


def _cut_after(text: str, marker: str) -> bytes:
    """``text`` truncated right after ``marker``, as a copy interrupted mid-file would be."""
    return text[: text.index(marker) + len(marker)].encode()


def _valid_dict() -> dict[str, Any]:
    return {
        "request_id": "truncated-json",
        "model": f"{MODEL}@champion",
        "forget_classes": [3],
        "requested_by": "dpo@example.com",
        "reason": "GDPR Art. 17 erasure request",
        "received_at": "2025-01-31T09:00:00Z",
    }


# --- environment breakers ---------------------------------------------------------------------


def _store_weights(settings: Any, version: int) -> Path:
    from tasks.registry import ModelRegistry

    uri = ModelRegistry.of(settings).client.get_model_version_download_uri(MODEL, str(version))
    return Path(uri.removeprefix("file://")) / "extra_files" / "model.safetensors"


@contextmanager
def _replace_weights(
    settings: Any, content: Callable[[bytes], bytes], update_tag: bool
) -> Iterator[Path]:
    """Swap version 1's registered weights; with ``update_tag`` the registered SHA-256 follows,
    as an insider with registry access would do, so the loader itself must refuse the file."""
    from delete.checkpoint import file_sha256
    from tasks.registry import TAG_WEIGHTS_SHA256, ModelRegistry

    weights = _store_weights(settings, 1)
    original = weights.read_bytes()
    tag = ModelRegistry.of(settings).version_tags(MODEL, 1)[TAG_WEIGHTS_SHA256]
    weights.write_bytes(content(original))
    client = ModelRegistry.of(settings).client
    if update_tag:
        client.set_model_version_tag(MODEL, "1", TAG_WEIGHTS_SHA256, file_sha256(weights))
    try:
        yield weights
    finally:
        weights.write_bytes(original)
        client.set_model_version_tag(MODEL, "1", TAG_WEIGHTS_SHA256, tag)


class _Planted:
    """Unpickling this runs ``os.mkdir(marker)``: proof that a load path unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def _marker(settings: Any) -> Path:
    return settings.root / "PICKLE-WAS-EXECUTED"


@contextmanager
def _truncated_weights(settings: Any, request: Path, mp: pytest.MonkeyPatch) -> Iterator[None]:
    with _replace_weights(settings, lambda b: b[: len(b) // 2], update_tag=False):
        yield


@contextmanager
def _truncated_weights_matching_tag(
    settings: Any, request: Path, mp: pytest.MonkeyPatch
) -> Iterator[None]:
    with _replace_weights(settings, lambda b: b[: len(b) // 2], update_tag=True):
        yield


@contextmanager
def _wrong_architecture(settings: Any, request: Path, mp: pytest.MonkeyPatch) -> Iterator[None]:
    """Tensors of a 5-class network under version 1's 10-class architecture spec."""
    import torch

    from delete.checkpoint import load_model, save_model
    from delete.models import ModelSpec, build_model

    def other(original: bytes) -> bytes:
        tmp = settings.root / "wrong-arch.safetensors"
        tmp.write_bytes(original)
        _, spec = load_model(tmp)
        torch.manual_seed(0)
        narrow = build_model(ModelSpec.from_dict({**spec.to_dict(), "num_classes": 5}))
        save_model(narrow, spec, tmp)  # metadata: the registered (10-class) architecture
        data = tmp.read_bytes()
        tmp.unlink()
        return data

    with _replace_weights(settings, other, update_tag=True):
        yield


@contextmanager
def _pickled_weights(settings: Any, request: Path, mp: pytest.MonkeyPatch) -> Iterator[None]:
    payload = pickle.dumps(_Planted(_marker(settings)))
    with _replace_weights(settings, lambda _: payload, update_tag=True):
        yield
    assert not _marker(settings).exists(), "a pickled checkpoint was unpickled"


@contextmanager
def _pickled_engine_checkpoint(
    settings: Any, request: Path, mp: pytest.MonkeyPatch
) -> Iterator[None]:
    """A pickle planted where the engine looks for its resume checkpoint."""
    import torch

    from tasks.registry import CHAMPION, TAG_WEIGHTS_SHA256, ModelRegistry
    from tasks.requests import load_request

    parsed = load_request(request)
    parent = ModelRegistry.of(settings).version_tags(
        MODEL, ModelRegistry.of(settings).get_alias(MODEL, CHAMPION)
    )
    folder = settings.artifacts_dir / "checkpoints" / parsed.request_id
    resume = folder / f"{parsed.content_hash()[:16]}-{parent[TAG_WEIGHTS_SHA256][:16]}"
    resume.mkdir(parents=True)
    torch.save(_Planted(_marker(settings)), resume / "engine_checkpoint.pt")
    try:
        yield
    finally:
        shutil.rmtree(folder)
    assert not _marker(settings).exists(), "a pickled engine checkpoint was unpickled"


@contextmanager
def _absurd_onnx_tolerance(settings: Any, request: Path, mp: pytest.MonkeyPatch) -> Iterator[None]:
    """Zero tolerance: onnxruntime's float rounding differs from PyTorch's in the last bits."""
    mp.setenv("UNLEARN_ONNX_ATOL", "0")
    mp.setenv("UNLEARN_ONNX_RTOL", "0")
    yield


def _dvc(settings: Any, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=settings.root,
        check=True,
        capture_output=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )


@contextmanager
def _dataset_without_class_5(
    settings: Any, request: Path, mp: pytest.MonkeyPatch
) -> Iterator[None]:
    """A new data version (``dvc add``) whose training split has no image of class 5."""
    data_dvc = settings.root / "data.dvc"
    pinned = data_dvc.read_text()
    labels = settings.root / "data" / "mnist5k" / "labels.csv"
    lines = labels.read_text().splitlines(keepends=True)
    labels.unlink()  # DVC links workspace files to its cache: never write through the link
    labels.write_text("".join(ln for ln in lines if not ln.rstrip().endswith(",5,train")))
    _dvc(settings, "add", "data")
    assert data_dvc.read_text() != pinned
    try:
        yield
    finally:
        data_dvc.write_text(pinned)
        _dvc(settings, "checkout", "--force", "data.dvc")
        _dvc(settings, "status", "data.dvc")
    from tasks.dataset import load_dataset_at_version

    bundle, _ = load_dataset_at_version(settings)
    assert (bundle.train.labels == 5).any()


@contextmanager
def _dvc_objects_gone(settings: Any, request: Path, mp: pytest.MonkeyPatch) -> Iterator[None]:
    """The workspace copy, the DVC cache and the DVC remote all lack the pinned data."""
    moved = [settings.root / "data", settings.root / ".dvc" / "cache", settings.root / "dvc-remote"]
    for path in moved:
        path.rename(path.with_name(path.name + ".away"))
    try:
        yield
    finally:
        for path in moved:
            if path.exists():
                shutil.rmtree(path)  # whatever a failed checkout/pull left behind
            path.with_name(path.name + ".away").rename(path)


# --- the cases --------------------------------------------------------------------------------

ALL_CLASSES = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"

CASES: list[Case] = [
    # files that do not parse: dropped into the inbox by hand
    Case(
        "malformed-yaml",
        "malformed or truncated YAML",
        raw=lambda t: _text(t, "malformed-yaml", model="[unclosed, {").encode(),
    ),
    Case(
        "truncated-yaml",
        "malformed or truncated YAML",
        raw=lambda t: _cut_after(_text(t, "truncated-yaml", forget_classes="[7, 3]"), "[7,"),
    ),
    Case(
        "truncated-json",
        "malformed or truncated JSON",
        raw=lambda t: json.dumps(_valid_dict()).encode()[:70],
        suffix=".json",
    ),
    Case(
        "not-utf8",
        "not UTF-8",
        raw=lambda t: _text(t, "not-utf8", requested_by="J\u00f6rg").encode("latin-1"),
    ),
    Case(
        "oversized",
        "oversized.yaml: file is too large (70",
        raw=lambda t: (_text(t, "oversized") + "# " + "x" * 70_000 + "\n").encode(),
    ),
    Case(
        "missing-field",
        "missing required field 'requested_by'",
        raw=lambda t: _text(t, "missing-field", requested_by=None).encode(),
    ),
    Case(
        "wrong-type",
        "field 'forget_classes': must be a list",
        raw=lambda t: _text(t, "wrong-type", forget_classes="three").encode(),
    ),
    Case(
        "wrong-type-date",
        "field 'received_at'",
        raw=lambda t: _text(t, "wrong-type-date", received_at="12345").encode(),
    ),
    Case(
        "path-traversal",
        "'../../x' is not a valid request id",
        raw=lambda t: _text(t, '"../../x"').encode(),
    ),
    Case(
        "duplicated-class",
        "duplicated class",
        raw=lambda t: _text(t, "duplicated-class", forget_classes="[3, 3]").encode(),
    ),
    # valid files the pipeline cannot honour: submitted
    Case("unknown-model", "unknown model 'no-such-model'", fields={"model": "no-such-model"}),
    Case("unknown-alias", "no alias @staging", fields={"model": f"{MODEL}@staging"}),
    Case("unknown-version", "has no version 99", fields={"model": f"{MODEL}/99"}),
    Case("unknown-class", "unknown class 'cat'", fields={"forget_classes": "[cat]"}),
    Case("class-out-of-range", "[42] out of range", fields={"forget_classes": "[42]"}),
    Case("class-duplicated", "duplicated: [3]", fields={"forget_classes": '[3, "3"]'}),
    Case("every-class", "cannot forget every class", fields={"forget_classes": ALL_CLASSES}),
    Case("unknown-method", "nosuch", fields={"method": "nosuch"}),
    Case("unknown-hparam", "no_such_knob", fields={"hparams": "{no_such_knob: 3}"}),
    Case(
        "data-version-mismatch",
        "expects dataset version 00000000000000000000000000000000",
        fields={"data_version": '"' + "0" * 32 + '"'},
    ),
    Case(
        "no-forget-samples",
        "have no training samples; nothing to forget",
        fields={"forget_classes": "[5]"},
        setup=_dataset_without_class_5,
    ),
    Case(
        "dvc-data-missing",
        "neither the workspace, the DVC cache nor remote",
        status="failed",
        setup=_dvc_objects_gone,
    ),
    Case(
        "checkpoint-truncated",
        "do not match their registered SHA-256",
        status="failed",
        fields={"model": f"{MODEL}/1"},
        setup=_truncated_weights,
    ),
    Case(
        "checkpoint-corrupt",
        "is corrupt or truncated",
        status="failed",
        fields={"model": f"{MODEL}/1"},
        setup=_truncated_weights_matching_tag,
    ),
    Case(
        "checkpoint-wrong-architecture",
        "does not fit architecture 'small_cnn'",
        status="failed",
        fields={"model": f"{MODEL}/1"},
        setup=_wrong_architecture,
    ),
    Case(
        "checkpoint-pickle",
        "is corrupt or truncated",
        status="failed",
        fields={"model": f"{MODEL}/1"},
        setup=_pickled_weights,
    ),
    Case(
        "engine-checkpoint-pickle",
        "engine checkpoint",
        status="failed",
        fields={"hparams": "{epochs: 1}"},
        setup=_pickled_engine_checkpoint,
    ),
    Case(
        "loss-nan-or-inf",
        "loss became",
        status="failed",
        fields={"hparams": "{lr: 1.0e+30, epochs: 3}"},
    ),
    Case(
        "onnx-parity",
        "differs from PyTorch beyond atol=0 rtol=0",
        status="failed",
        fields={"hparams": "{epochs: 1}"},
        setup=_absurd_onnx_tolerance,
    ),
]


def _queue(case: Case, settings: Any, tmp_path: Path) -> Path:
    """Put the case's request in the inbox; returns the request file used."""
    from tasks.inbox import Inbox

    if case.raw is not None:
        target = settings.inbox_dir / f"{case.name}{case.suffix}"
        hidden = settings.inbox_dir / f".{case.name}.partial"  # never claimed half-written
        settings.inbox_dir.mkdir(parents=True, exist_ok=True)
        hidden.write_bytes(case.raw(tmp_path))
        hidden.rename(target)
        return target
    source = write_request(tmp_path / f"{case.name}.yaml", case.name, **case.fields)
    Inbox(settings).submit(source)
    return source


def _certificate(settings: Any, request_id: str) -> str:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(
        app, ["--root", str(settings.root), "audit", "certificate", request_id]
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_failed_with_reason_audited_and_registry_unchanged(
    case: Case,
    project: dict[str, Any],
    first_request: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import open_audit_log

    settings = project["settings"]
    audit = open_audit_log(settings)
    n_records = len(audit.records())
    source = _queue(case, settings, tmp_path)
    setup = case.setup(settings, source, monkeypatch) if case.setup else nullcontext()
    with setup:
        before = registry_snapshot(settings)
        results = process_inbox_flow(root=str(settings.root))
        after = registry_snapshot(settings)

    # 1. one clear line naming the problem
    (result,) = results
    assert result["state"] == "failed", result
    reason = result["reason"]
    assert case.expect in reason and "\n" not in reason, reason
    assert result.get("status", "rejected") == case.status, result
    # 2. the request is in failed/ with its reason
    failed = Path(result["file"])
    assert failed.parent == settings.failed_dir and failed.is_file()
    reason_text = Path(f"{failed}.reason.txt").read_text()
    assert reason_text.count("\n") == 1 and case.expect in reason_text
    assert reason_text.startswith(f"{case.status}: ")
    assert not any(settings.inbox_dir.iterdir()) and not any(settings.processing_dir.iterdir())
    # 3. exactly one audit record, of the rejection, in a log that verifies
    new = audit.records()[n_records:]
    assert [r["event"] for r in new] == [f"request.{case.status}"], new
    assert case.expect in new[0]["payload"]["reason"]
    expected_id = None if case.raw is not None else case.name
    assert new[0]["payload"]["request_id"] == expected_id
    assert audit.verify().ok
    if expected_id is not None:  # the request's record matches the digest its audit entry cites
        cert = _certificate(settings, expected_id)
        assert f"**Outcome:** {case.status}" in cert and "not a cryptographic" in cert
    # 4. the registry is as it was (versions, completeness, verdicts, @champion, @challenger)
    assert after == before
    assert not (settings.root / "x.json").exists() and not (settings.root.parent / "x").exists()


@pytest.mark.slow
def test_rejected_submission_is_audited_too(project: dict[str, Any], tmp_path: Path) -> None:
    """``unlearn submit`` refuses a bad file before the pipeline sees it: same four outcomes."""
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.audit import open_audit_log

    settings = project["settings"]
    audit = open_audit_log(settings)
    n_records = len(audit.records())
    before = registry_snapshot(settings)
    bad = write_request(tmp_path / "dup.yaml", "submit-dup", forget_classes="[3, 3]")
    result = CliRunner().invoke(app, ["--root", str(settings.root), "submit", str(bad)])

    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: dup.yaml: field 'forget_classes': duplicated class(es): 3")
    (record,) = audit.records()[n_records:]
    assert record["event"] == "request.rejected" and record["payload"]["stage"] == "submit"
    assert "duplicated class" in record["payload"]["reason"]
    kept = settings.failed_dir / record["payload"]["file"]
    assert kept.read_bytes() == bad.read_bytes()
    assert "duplicated class" in Path(f"{kept}.reason.txt").read_text()
    assert audit.verify().ok
    assert registry_snapshot(settings) == before
    assert not any(settings.inbox_dir.iterdir())


@pytest.mark.slow
def test_pipeline_refuses_to_run_without_an_audit_key(
    project: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside demo mode nothing is claimed, let alone changed, without the audit key."""
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import AuditError
    from tasks.inbox import Inbox

    settings = project["settings"]
    inbox = Inbox(settings)
    inbox.submit(write_request(tmp_path / "nokey.yaml", "no-key", model="no-such-model"))
    with monkeypatch.context() as patch:
        patch.delenv("UNLEARN_AUDIT_KEY")
        patch.delenv("UNLEARN_DEMO_MODE", raising=False)
        with pytest.raises(AuditError, match="^UNLEARN_AUDIT_KEY is not set"):
            process_inbox_flow(root=str(settings.root))
    assert [p.name.split("__")[1] for p in inbox.list_queued()] == ["no-key.yaml"]
    assert not any(settings.processing_dir.iterdir())
    (result,) = process_inbox_flow(root=str(settings.root))  # with the key: handled normally
    assert result["state"] == "failed" and "unknown model" in result["reason"]


def _flip_event(lines: list[bytes], k: int) -> list[bytes]:
    line = bytearray(lines[k - 1])
    at = line.index(b'"event":"') + len(b'"event":"')
    line[at] = ord("X") if line[at] != ord("X") else ord("Y")
    return [*lines[: k - 1], bytes(line), *lines[k:]]


#: name -> (change the log's lines, 1-based number of the first bad record; n = last record)
TAMPERS: dict[str, tuple[Callable[[list[bytes]], list[bytes]], Callable[[int], int]]] = {
    "edited-byte": (lambda ls: _flip_event(ls, 3), lambda n: 3),
    "deleted-record": (lambda ls: ls[:2] + ls[3:], lambda n: 3),
    "deleted-first": (lambda ls: ls[1:], lambda n: 1),
    "deleted-last": (lambda ls: ls[:-1], lambda n: n),
    "reordered": (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], lambda n: 2),
    "truncated": (lambda ls: [*ls[:-1], ls[-1][: len(ls[-1]) // 2]], lambda n: n),
}


@pytest.mark.slow
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_unlearn_audit_verify_names_the_first_bad_record(
    tamper: str, project: dict[str, Any], first_request: dict[str, Any], tmp_path: Path
) -> None:
    """The pipeline's own audit log (copied out of the test's root), tampered with."""
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.process_inbox import process_inbox_flow
    from tasks.inbox import Inbox

    settings = project["settings"]
    # The root's log holds the bootstrap's and the request's records; one refused request
    # more, so that every tampering below has records on both sides of the one it breaks.
    Inbox(settings).submit(write_request(tmp_path / "bad.yaml", "tamper-pad", model="no-such"))
    (refused,) = process_inbox_flow(root=str(settings.root))
    assert refused["state"] == "failed"
    root = tmp_path / "copy"
    shutil.copytree(settings.audit_dir, root / "audit")
    log = root / "audit" / "audit.jsonl"

    def verify() -> tuple[int, str]:
        result = CliRunner().invoke(app, ["--root", str(root), "audit", "verify"])
        return result.exit_code, result.stdout + result.stderr

    code, out = verify()
    assert code == 0 and out.startswith("audit log OK"), out
    lines = log.read_bytes().splitlines(keepends=True)
    n = len(lines)
    assert n >= 5
    change, first_bad = TAMPERS[tamper]
    log.write_bytes(b"".join(change(lines)))
    code, out = verify()
    assert code == 1, out
    (line,) = out.splitlines()
    assert line.startswith(f"error: audit log INVALID at record {first_bad(n)}: "), line


def test_no_load_path_unpickles() -> None:
    """Static check of the library and the pipeline: every deserialiser is a safe one."""
    import re

    repo = Path(__file__).resolve().parents[2]
    unsafe = re.compile(
        r"pickle\.loads?\(|cloudpickle|dill\.|joblib\.load|allow_pickle\s*=\s*True|"
        r"torch\.load\((?![^)]*weights_only=True)|yaml\.load\((?![^)]*Loader=_StrictSafeLoader)|"
        r"yaml\.unsafe_load|mlflow\.(pytorch|sklearn|pyfunc)\.log_model|pickle\.Unpickler\("
    )
    offenders = []
    for package in ("delete", "tasks", "flows"):
        for path in sorted((repo / package).rglob("*.py")):
            for number, text in enumerate(path.read_text().splitlines(), start=1):
                if unsafe.search(text) and not text.lstrip().startswith(("#", ">>>")):
                    offenders.append(f"{path.relative_to(repo)}:{number}: {text.strip()}")
    assert offenders == [], "\n".join(offenders)
