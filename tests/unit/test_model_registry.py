"""``ModelRegistry`` on a real MLflow SQLite store: transient I/O is retried, "not found" is not.

Faults are injected at the client boundary only: one method of the registry's (real) client
raises a connection error once; everything else is the real store in ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.registry import (
    CHAMPION,
    TAG_COMPLETE,
    TAG_REQUEST_ID,
    ModelNotFoundError,
    ModelRegistry,
)
from tasks.requests import parse_model_ref
from tasks.settings import PipelineSettings

MODEL = "retry-classifier"
REQUEST = "r-retry"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A registry (no back-off) with one run and one incomplete version of ``MODEL``."""
    for name in ("MLFLOW_TRACKING_URI", "UNLEARN_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(name, raising=False)
    registry = ModelRegistry(PipelineSettings.from_env(tmp_path), retry_delays_s=(0, 0, 0))
    run_id = registry.create_run("setup", {TAG_REQUEST_ID: REQUEST})
    registry.client.create_registered_model(MODEL)
    (tmp_path / "weights").mkdir()
    registry.client.create_model_version(
        MODEL,
        source=(tmp_path / "weights").as_uri(),
        run_id=run_id,
        tags={TAG_REQUEST_ID: REQUEST, TAG_COMPLETE: "false"},
    )
    return registry


def _fail_once(
    monkeypatch: pytest.MonkeyPatch, registry: ModelRegistry, method: str, *, after: bool = False
) -> list[int]:
    """Make ``registry.client.<method>`` raise a connection error on its first call (before
    doing anything, or ``after`` doing it); returns the list of its calls."""
    real = getattr(registry.client, method)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1 and not after:
            raise ConnectionResetError(f"{method}: connection reset by peer")
        result = real(*args, **kwargs)
        if len(calls) == 1:
            raise ConnectionResetError(f"{method}: connection reset after the write")
        return result

    monkeypatch.setattr(registry.client, method, flaky)
    return calls


def _run_id(registry: ModelRegistry) -> str:
    return str(registry.client.get_model_version(MODEL, "1").run_id)


_Case = tuple[str, str, Callable[[ModelRegistry], Any], Callable[[ModelRegistry, Any], bool]]
CASES: list[_Case] = [
    ("version_tags", "get_model_version", lambda r: r.version_tags(MODEL, 1),
     lambda r, out: out[TAG_REQUEST_ID] == REQUEST),
    ("set_version_tags", "set_model_version_tag", lambda r: r.set_version_tags(MODEL, 1, {"k": 7}),
     lambda r, _: r.client.get_model_version(MODEL, "1").tags["k"] == "7"),
    ("mark_complete", "set_model_version_tag", lambda r: r.mark_complete(MODEL, 1),
     lambda r, _: r.client.get_model_version(MODEL, "1").tags[TAG_COMPLETE] == "true"),
    ("set_alias", "set_registered_model_alias", lambda r: r.set_alias(MODEL, CHAMPION, 1),
     lambda r, out: out is None and r.client.get_registered_model(MODEL).aliases == {CHAMPION: 1}),
    ("get_alias", "get_registered_model", lambda r: r.get_alias(MODEL, CHAMPION),
     lambda r, out: out is None),
    ("registered_model_exists", "get_registered_model", lambda r: r.registered_model_exists(MODEL),
     lambda r, out: out is True),
    ("resolve_version", "get_registered_model",
     lambda r: r.resolve_version(SimpleNamespace(name=MODEL, version=1, alias=None)),
     lambda r, out: out == (1, {})),
    ("list_versions", "search_model_versions", lambda r: r.list_versions(MODEL),
     lambda r, out: [row["version"] for row in out] == [1]),
    ("versions_for_request", "search_model_versions",
     lambda r: r.versions_for_request(MODEL, REQUEST), lambda r, out: [v for v, _ in out] == [1]),
    ("delete_incomplete_versions", "delete_model_version",
     lambda r: r.delete_incomplete_versions(MODEL, REQUEST),
     lambda r, out: out == [1] and r.versions_for_request(MODEL, REQUEST) == []),
    ("set_version_description", "update_model_version",
     lambda r: r.set_version_description(MODEL, 1, "**hello**"),
     lambda r, _: r.client.get_model_version(MODEL, "1").description == "**hello**"),
    ("log_to_run", "log_batch", lambda r: r.log_to_run(_run_id(r), params={"lr": 0.1}),
     lambda r, _: r.client.get_run(_run_id(r)).data.params == {"lr": "0.1"}),
    ("finish_run", "set_terminated", lambda r: r.finish_run(_run_id(r), "FAILED"),
     lambda r, _: r.client.get_run(_run_id(r)).info.status == "FAILED"),
    ("close_stale_runs", "search_runs", lambda r: r.close_stale_runs(REQUEST),
     lambda r, out: out == [_run_id(r)]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "method", "call", "check"), CASES, ids=[c[0] for c in CASES])
def test_an_idempotent_call_retries_a_transient_failure_then_succeeds(
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    method: str,
    call: Callable[[ModelRegistry], Any],
    check: Callable[[ModelRegistry, Any], bool],
) -> None:
    calls = _fail_once(monkeypatch, registry, method)
    out = call(registry)
    assert len(calls) >= 2, f"{name} did not retry {method}"
    monkeypatch.undo()
    assert check(registry, out)


def test_a_retried_create_run_creates_one_run(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fail_once(monkeypatch, registry, "create_run", after=True)  # created, reply lost
    run_id = registry.create_run("once", {TAG_REQUEST_ID: "r-once"})
    assert len(calls) == 1, "the retry must find the run, not create another"
    experiment = registry.client.get_experiment_by_name("compliance-unlearning")
    runs = registry.client.search_runs(
        [experiment.experiment_id], filter_string="tags.request_id = 'r-once'"
    )
    assert [r.info.run_id for r in runs] == [run_id]


def test_not_found_is_not_retried_and_says_so_in_one_line(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = registry.client.get_model_version
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(registry.client, "get_model_version", counted)
    with pytest.raises(ModelNotFoundError) as caught:
        registry.version_tags(MODEL, 99)
    assert calls == [1]
    assert str(caught.value) == f"model '{MODEL}' has no version 99"
    with pytest.raises(ModelNotFoundError, match="^unknown model 'nope': it is not registered$"):
        registry.resolve_version(parse_model_ref("nope@champion"))
    assert registry.get_alias("nope", CHAMPION) is None
    assert registry.registered_model_exists("nope") is False


def test_a_failure_that_outlasts_the_retries_is_raised(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def down(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise ConnectionRefusedError("tracking server down")

    monkeypatch.setattr(registry.client, "get_model_version", down)
    with pytest.raises(ConnectionRefusedError):
        registry.version_tags(MODEL, 1)
    assert len(calls) == 1 + len(registry.retry_delays_s)


def test_one_cached_client_per_registry(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(tmp_path)
    registry = ModelRegistry(settings)
    assert registry.client is registry.client
    assert ModelRegistry.of(settings) is ModelRegistry.of(settings)
    assert ModelRegistry.of(settings).client is ModelRegistry.of(settings).client
    assert registry.client.tracking_uri == settings.mlflow_tracking_uri
    assert registry.client._registry_uri == settings.mlflow_tracking_uri
