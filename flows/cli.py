"""``unlearn``: the command line of the compliance deletion pipeline.

Commands::

    unlearn [--root DIR] register CARD.yaml       register a team's own model @champion
    unlearn [--root DIR] submit REQUEST.yaml      validate and queue a deletion request
    unlearn [--root DIR] process [--model NAME]   run the process_inbox flow now
    unlearn [--root DIR] status [REQUEST_ID]      where each request is (queued ... done/failed)
    unlearn [--root DIR] models                   registered model versions and their aliases
    unlearn [--root DIR] audit verify             check the audit log's hash chain and signatures
    unlearn [--root DIR] audit certificate ID     deletion certificate (Markdown or HTML)
    unlearn [--root DIR] ui                       MLflow UI on the project's store
    unlearn bench [ARGS...]                       the benchmark (``python -m delete.bench``)

Every failure exits non-zero with one line ``error: ...`` on stderr (set ``UNLEARN_DEBUG=1``
for the traceback and Prefect's full log). ``--root`` defaults to ``$UNLEARN_HOME`` or the
current directory. The audit key is checked before any flow starts.

``submit`` checks what it can without running anything: the request parses, its model is
registered with the alias it names, its classes exist in that model, and its id is not
queued, being processed or already done. A refused request is not queued (``process`` never
sees it): a copy of the file and a ``.reason.txt`` go to ``requests/failed/`` so the refusal
is on record, and the command exits with status 1. ``--no-check`` skips the registry checks
(e.g. where the registry is not reachable); the flow checks the same things when it runs.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from flows._console import (
    console_script,
    hide_prefect_failure_logs,
    live_progress,
    quiet_environment,
)
from tasks._common import one_line
from tasks.settings import PipelineSettings

__all__ = ["app"]

_DEBUG_ENV = "UNLEARN_DEBUG"
#: The longest error line the CLI prints (every line of the message, joined).
_ERROR_LIMIT = 500
#: Table width off a terminal: wide enough that no row wraps (scripts read one row a line).
_UNWRAPPED_WIDTH = 100_000
#: Where ``unlearn ui`` serves MLflow by default.


class CommandError(RuntimeError):
    """A command could not do its job; the message is the one line the user sees."""


def _describe(exc: BaseException) -> str:
    """Our own errors carry a one-line message; anything else is prefixed by its type."""
    module = type(exc).__module__.split(".")[0]
    message = str(exc)
    if module in {"tasks", "flows", "delete"} and message:
        return one_line(message, _ERROR_LIMIT, first_line=False)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}", _ERROR_LIMIT, first_line=False)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return one_line(text, _ERROR_LIMIT, first_line=False)


def _error(message: str) -> None:
    line = one_line(message, _ERROR_LIMIT, first_line=False)
    typer.echo(f"error: {line.replace('Value error, ', '')}", err=True)


def _is_usage_error(exc: BaseException) -> bool:
    """Click-style exceptions (typer vendors its own click, so test the shape, not the class)."""
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


class _OneLineErrors(TyperGroup):
    """Turns every failure (usage errors included) into one ``error: ...`` line and exit 1/2."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except typer.Abort:
            _error("aborted")
            code = 1
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                # the help text is the message (rich has already printed it and left it empty)
                message = exc.format_message() if _is_usage_error(exc) else ""  # type: ignore[attr-defined]
                if message.strip():
                    typer.echo(message)
                code = 0
            elif _is_usage_error(exc):
                _error(exc.format_message())  # type: ignore[attr-defined]
                code = exc.exit_code  # type: ignore[attr-defined]
            elif os.environ.get(_DEBUG_ENV):
                raise
            else:
                _error(_describe(exc))
                code = 1
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    cls=_OneLineErrors,
    name="unlearn",
    help="Compliance pipeline: make models forget classes, and prove it.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(
    help="Verify the audit log; render deletion certificates.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


class CertificateFormat(enum.StrEnum):
    md = "md"
    html = "html"


@app.callback()
def _main(
    ctx: typer.Context,
    root: Path | None = typer.Option(
        None,
        "--root",
        help="Project root (default: $UNLEARN_HOME or the current directory).",
        file_okay=False,
    ),
) -> None:
    ctx.obj = {"root": root}
    # before any command imports Prefect or MLflow: both read their settings at import
    quiet_environment(PipelineSettings.from_env(root).root)
    if not os.environ.get(_DEBUG_ENV):
        # Prefect's INFO lines go to its API (and UI), not to the terminal, and MLflow's
        # ("Creating initial MLflow database tables") nowhere: each command prints its own
        # summary. Warnings still show.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _settings(ctx: typer.Context) -> PipelineSettings:
    obj = ctx.find_root().obj or {}
    return PipelineSettings.from_env(obj.get("root"))


def _require_audit_key(settings: PipelineSettings) -> None:
    """Refuse a flow command without an audit key before Prefect starts (one line, no run)."""
    from tasks.audit import audit_key

    audit_key(settings)


@contextlib.contextmanager
def _flow_progress(message: str) -> Iterator[None]:
    """Run a flow: ``rich`` progress on a terminal, and its failure as our one line only."""
    if not os.environ.get(_DEBUG_ENV):
        hide_prefect_failure_logs()
    with live_progress(message):
        yield


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _print_table(headers: list[str], rows: list[list[str]], console: Console | None = None) -> None:
    """A ``rich`` table: a header line, then one line per row, columns two spaces apart.

    On a terminal a long cell wraps inside its column; in a pipe or file every row stays on
    one line, as scripts that read the text (not ``--json``) expect.
    """
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a "[3]" is not rich markup
    console = console if console is not None else Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=_UNWRAPPED_WIDTH)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        typer.echo(line.rstrip())


# --- commands ------------------------------------------------------------------------------


def _audit_rejected_submission(settings: PipelineSettings, file: str, reason: str) -> str:
    """Append the ``request.rejected`` audit record of a refused submission; "" when done."""
    from tasks.audit import AuditError, open_audit_log

    try:
        open_audit_log(settings).append(
            "request.rejected",
            {"request_id": None, "file": file, "reason": reason, "stage": "submit"},
        )
    except AuditError as exc:  # e.g. no key: the rejection itself must still be reported
        return f"; not in the audit log: {one_line(str(exc), 120, first_line=False)}"
    return ""


@app.command()
def bootstrap(
    ctx: typer.Context,
    task: str = typer.Option(
        "classification", "--task", help="classification, face, backdoor or segmentation."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Registered name (default: UNLEARN_MODEL_NAME[-TASK])."
    ),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Training epochs of the original."),
    option: list[str] = typer.Option(
        [],
        "--option",
        help="A task data option KEY=VALUE (JSON value), e.g. --option target=7. Repeatable.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Version the data with DVC, train a task's original model, register it @champion."""
    settings = _settings(ctx)
    _require_audit_key(settings)  # before Prefect is even imported
    from delete.applications import get_task
    from flows.bootstrap import bootstrap_flow, check_task_options

    get_task(task)
    options: dict[str, Any] = {}
    for item in option:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--option {item!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    check_task_options(task, options)  # a bad option is one line, before any flow starts
    with _flow_progress(f"bootstrapping a {task} model"):
        result = bootstrap_flow(
            root=str(settings.root),
            model_name=model,
            epochs=epochs,
            device=device,
            task=task,
            task_options=options or None,
        )
    state = "reused" if result["reused"] else "registered"
    typer.echo(f"{result['model']} version {result['version']} {state} (task {task})")


@app.command()
def register(
    ctx: typer.Context,
    card: Path = typer.Argument(..., help="The model card (.yaml, .yml or .json)."),
) -> None:
    """Register an existing trained model and its dataset (a model card) as version 1 @champion."""
    settings = _settings(ctx)
    _require_audit_key(settings)  # no audit key: refuse before anything else
    from flows.register import register_flow
    from tasks.register import validate_card

    # Checked here first as well, so a refused card is one line and never a failed flow run.
    validate_card(settings, card)
    with _flow_progress(f"registering {card.name}"):
        result = register_flow(card=str(card), root=str(settings.root))
    md5 = result["data_version"]["md5"]
    shown = ", ".join(f"{k} {v:.1f}" for k, v in result["metrics"].items() if "/" not in k)
    typer.echo(
        f"{result['model']} version {result['version']} registered @{result['alias']} "
        f"({shown}; data {md5})"
    )


@app.command()
def submit(
    ctx: typer.Context,
    request_file: Path = typer.Argument(..., help="The request (.yaml, .yml or .json)."),
    no_check: bool = typer.Option(
        False,
        "--no-check",
        help="Skip the registry checks (model, alias, classes, id already done); "
        "the flow still checks them when it runs.",
    ),
    gpu: bool = typer.Option(
        False, "--gpu", help="With a server: run it on the GPU pool (unlearn-on-demand-gpu)."
    ),
) -> None:
    """Check a deletion request against the registry and queue it: as a flow run of
    unlearn-on-demand when a Prefect server coordinates several hosts, else in
    requests/inbox/."""
    from tasks.coordination import coordination_mode
    from tasks.inbox import Inbox
    from tasks.requests import DeletionRequest, RequestError

    settings = _settings(ctx)

    def check(request: DeletionRequest) -> None:
        from tasks.submission import check_submission

        check_submission(settings, request)

    if coordination_mode(settings) == "server":
        from tasks.dispatch import submit_flow_run
        from tasks.requests import load_request

        request = load_request(request_file)
        if not no_check:
            check(request)
        run = submit_flow_run(request, gpu=gpu)
        typer.echo(f"queued {request.request_id} -> flow run {run.flow_run_name} ({run.state})")
        return

    try:
        queued = Inbox(settings).submit(request_file, check=None if no_check else check)
    except RequestError as exc:
        if exc.recorded is None:
            raise
        where = _relative(exc.recorded, settings.root)
        note = _audit_rejected_submission(settings, exc.recorded.name, str(exc))
        raise RequestError(f"{exc} (rejected; recorded in {where}{note})") from None
    request_id = queued.name.split("__", 1)[1].rsplit(".", 1)[0]
    typer.echo(f"queued {request_id} -> {_relative(queued, settings.root)}")


@app.command()
def process(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="Only requests for this model."),
    as_json: bool = typer.Option(False, "--json", help="Print every summary as JSON."),
) -> None:
    """Process every queued request now (the process_inbox flow).

    Exits 1 when any request failed or was rejected, so a scheduler can alert on it.
    """
    settings = _settings(ctx)
    _require_audit_key(settings)
    from flows.process_inbox import process_inbox_flow

    with _flow_progress("processing the inbox"):
        results = process_inbox_flow(root=str(settings.root), model=model) or []
    if as_json:
        typer.echo(json.dumps(results, indent=2, sort_keys=True, default=str))
    else:
        for r in results:
            _print_outcome(settings, r)
        if not results:
            typer.echo("inbox empty: nothing to process")
    failed = sum(r.get("state") != "done" for r in results)
    if failed:
        raise CommandError(
            f"{failed} of {len(results)} request(s) failed or were rejected (see `unlearn status`)"
        )


def _mlflow_link(settings: PipelineSettings, r: dict[str, Any]) -> str | None:
    """Where to see a request's MLflow run: a URL on a tracking server, else the local UI."""
    from tasks.registry import mlflow_page

    run_id = r.get("mlflow_run_id")
    if not run_id:
        return None
    page, local = mlflow_page(settings, run_id, r.get("model"), r.get("version"))
    return f"run {run_id}, {page}" + (" (after `unlearn ui`)" if local else "")


def _print_outcome(settings: PipelineSettings, r: dict[str, Any]) -> None:
    """One request's outcome, then where its evidence is (paths relative to the root)."""
    who = r.get("request_id") or Path(str(r.get("file", "?"))).name
    details = [f"{k} {r[k]}" for k in ("version", "alias") if r.get(k) is not None]
    if r.get("reason"):
        details.append(one_line(str(r["reason"]), 200, first_line=False))
    typer.echo(f"{who}: {r.get('state')}" + (f" ({'; '.join(details)})" if details else ""))
    where: list[tuple[str, str | None]] = [
        ("record", r.get("record_path")),
        ("report", r.get("evidently_html")),
        ("onnx", r.get("onnx_path")),
    ]
    for label, path in where:
        if path:
            typer.echo(f"  {label:<12}{_relative(Path(path).resolve(), settings.root)}")
    if r.get("request_id") and r.get("state") == "done":
        typer.echo(f"  {'certificate':<12}unlearn audit certificate {r['request_id']}")
    link = _mlflow_link(settings, r)
    if link:
        typer.echo(f"  {'mlflow':<12}{link}")


@app.command()
def status(
    ctx: typer.Context,
    request_id: str | None = typer.Argument(None, help="Only this request."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Where each request is: queued, processing, done or failed."""
    from tasks.inbox import Inbox
    from tasks.requests import RequestError, validate_request_id

    settings = _settings(ctx)
    if request_id is not None:
        try:
            validate_request_id(request_id)
        except ValueError as exc:
            raise RequestError(f"request id: {exc}") from None
    from tasks.coordination import coordination_mode

    if coordination_mode(settings) == "server":
        _server_status(request_id, as_json)
        return
    rows = Inbox(settings).status(request_id)
    if request_id is not None and not rows:
        raise RequestError(f"no request '{request_id}' under {settings.requests_dir}")
    if as_json:
        data = [
            {
                "request_id": s.request_id,
                "state": s.state,
                "file": str(s.file),
                "reason": s.reason,
                "version": s.version,
                "model": s.model,
            }
            for s in rows
        ]
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no requests under {settings.requests_dir}")
        return
    table = [
        [
            s.request_id or "(invalid)",
            s.state,
            "-" if s.version is None else str(s.version),
            _relative(s.file, settings.root),
            s.reason or "",
        ]
        for s in rows
    ]
    _print_table(["REQUEST_ID", "STATE", "VERSION", "FILE", "REASON"], table)


def _server_status(request_id: str | None, as_json: bool) -> None:
    """``unlearn status`` with a server: the states of the requests' flow runs."""
    import dataclasses

    from tasks.dispatch import request_runs
    from tasks.requests import RequestError

    runs = request_runs(request_id)
    if request_id is not None and not runs:
        raise RequestError(f"no flow run carries request '{request_id}'")
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in runs], indent=2))
        return
    if not runs:
        typer.echo("no requests submitted to the Prefect server")
        return
    table = [
        [r.request_id, r.state, r.flow_run_name, r.started or "-", r.message or ""] for r in runs
    ]
    _print_table(["REQUEST_ID", "STATE", "FLOW_RUN", "STARTED", "MESSAGE"], table)


@app.command()
def recover() -> None:
    """With a server: mark runs whose worker died CRASHED and rerun their requests."""
    from tasks.dispatch import recover_interrupted

    reruns = recover_interrupted()
    for r in reruns:
        typer.echo(f"rerun {r['request_id']}: flow run {r['crashed_run']} -> {r['rerun']}")
    if not reruns:
        typer.echo("nothing to recover")


@app.command()
def models(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--model", help="Only this registered model."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Registered model versions, their aliases and gate verdicts."""
    from tasks.registry import ModelRegistry

    versions = ModelRegistry.of(_settings(ctx)).list_versions(name)
    if as_json:
        typer.echo(json.dumps(versions, indent=2, sort_keys=True, default=str))
        return
    if not versions:
        typer.echo("no registered model versions")
        return
    versions = [_named_classes(row) for row in versions]
    headers: list[str] = []
    for row in versions:
        headers += [k for k in row if k not in headers]

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value) or "-"
        return one_line(str(value), 60, first_line=False)

    _print_table(
        [h.upper() for h in headers], [[cell(row.get(h)) for h in headers] for row in versions]
    )


def _named_classes(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its forget classes as the request named them (``id-3``, not ``3``).

    Example:
        >>> _named_classes({"forget_classes": "[3]", "forget_class_names": '["id-3"]'})
        {'forget_classes': ['id-3']}
    """
    out = dict(row)
    raw = out.pop("forget_class_names", None) or out.get("forget_classes")
    try:
        out["forget_classes"] = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        out["forget_classes"] = raw
    return out


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check every audit record: hash chain, HMAC signatures, nothing cut off."""
    from tasks.audit import AuditError, open_audit_log

    settings = _settings(ctx)
    result = open_audit_log(settings).verify()
    if not result.ok:
        raise AuditError(str(result))
    demo = settings.demo_mode and not settings.audit_key
    typer.echo(f"{result}{' (demo mode: signed with the public demo key)' if demo else ''}")


def _citing_entry(settings: PipelineSettings, request_id: str, digests: set[str]) -> dict[str, Any]:
    """The newest verified audit-log record about ``request_id``; refuse a tampered log.

    An entry that cites the record (``payload.record_sha256``: SHA-256 of the record file, or
    :func:`tasks.audit.record_digest` of its content) must match the record as it is now.
    """
    from tasks.audit import AuditError, open_audit_log

    log = open_audit_log(settings)
    verification = log.verify()
    if not verification.ok:
        raise AuditError(f"refusing to issue a certificate: {verification}")
    entries = log.find(request_id=request_id)
    if not entries:
        raise AuditError(f"the audit log has no entry for request '{request_id}'")
    citing = [e for e in entries if (e.get("payload") or {}).get("record_sha256")]
    entry = (citing or entries)[-1]
    cited = (entry.get("payload") or {}).get("record_sha256")
    if cited is not None and cited not in digests:
        raise AuditError(
            f"audit record of '{request_id}' does not match the digest in audit log entry "
            f"{entry.get('seq')} (record edited after it was logged)"
        )
    return entry


@audit_app.command("certificate")
def audit_certificate(
    ctx: typer.Context,
    request_id: str = typer.Argument(..., help="The request to certify."),
    fmt: CertificateFormat = typer.Option(CertificateFormat.md, "--format", "-f"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here instead of stdout."),
) -> None:
    """Render the deletion certificate of a request (checked against the audit log)."""
    from tasks._fs import atomic_write_text
    from tasks.audit import read_request_record, record_digest, request_record_path
    from tasks.certificate import render_certificate

    settings = _settings(ctx)
    record = read_request_record(settings, request_id)
    file_digest = hashlib.sha256(request_record_path(settings, request_id).read_bytes())
    entry = _citing_entry(settings, request_id, {file_digest.hexdigest(), record_digest(record)})
    text = render_certificate(record, fmt.value, log_entry=entry, root=settings.root)
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    typer.echo(f"wrote {out}")


def _prefect_ui_lines() -> list[str]:
    """Where the Prefect UI is: the server's, or how to browse the ephemeral API's history."""
    from prefect.settings import get_current_settings

    current = get_current_settings()
    if current.ui_url:
        return [f"Prefect UI: {current.ui_url}"]
    home = current.home
    prefect = console_script("prefect")
    return [
        "Prefect UI: no server (PREFECT_API_URL is unset); each command ran its flows on a",
        f"  temporary API whose history is kept in {home}. To browse it, run in another shell:",
        f"  PREFECT_HOME={home} {prefect} server start   (then http://127.0.0.1:4200)",
    ]


@app.command()
def ui(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the MLflow UI listens on."),
    port: int = typer.Option(5000, "--port", min=1, max=65535, help="Its port."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would start, and start nothing."
    ),
) -> None:
    """Start the MLflow UI on the project's store (Ctrl-C stops it); say where Prefect's is."""
    settings = _settings(ctx)
    for line in _prefect_ui_lines():
        typer.echo(line)
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        typer.echo(f"MLflow UI: {uri} (a tracking server: nothing to start)")
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port)]
    typer.echo(f"MLflow UI: http://{host}:{port} on {uri}")
    if dry_run:
        typer.echo(f"would run: {shlex.join(command)}")
        return
    try:
        code = subprocess.call(command)
    except KeyboardInterrupt:  # Ctrl-C reached mlflow too: a normal way to stop it
        return
    if code not in (0, -signal.SIGINT, 128 + signal.SIGINT):
        raise CommandError(f"mlflow ui exited with status {code}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark; arguments go to ``python -m delete.bench`` (try ``--help``)."""
    from delete.bench import main as bench_main

    code = bench_main(list(ctx.args))
    if code:
        raise typer.Exit(int(code))


if __name__ == "__main__":  # pragma: no cover
    app()
