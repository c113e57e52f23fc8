"""Deletion requests: the file a compliance team drops into ``requests/inbox/``.

A request names a model and the classes it must forget, who asked and on what legal basis.
It arrives as YAML or JSON written by people and tools outside the pipeline, so parsing is
defensive: the size is capped before reading, the bytes must be UTF-8 text, YAML is read with
``safe_load`` semantics and aliases are refused (no "billion laughs"), duplicate keys are
refused, and every problem becomes one :class:`RequestError` line that names the file and the
field, e.g. ``request.yaml: field 'forget_classes': list should have at least 1 item``.

Datetimes without a timezone are taken as UTC, a bare date as midnight UTC; all are stored in
UTC so that the :meth:`DeletionRequest.content_hash` of equal requests is equal.

Example request (YAML)::

    request_id: gdpr-2025-0042
    model: mnist5k-classifier@champion
    forget_classes: [3]
    requested_by: dpo@example.com
    reason: GDPR Art. 17 erasure request
    received_at: 2025-01-31T09:00:00Z
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks._common import canonical_json, one_line

__all__ = [
    "RequestError",
    "ModelRef",
    "DeletionRequest",
    "RepairSetRequest",
    "REQUEST_ID_PATTERN",
    "MODEL_NAME_PATTERN",
    "load_request",
    "read_capped",
    "parse_request",
    "parse_request_bytes",
    "parse_model_ref",
    "validate_request_id",
    "canonical_json",
]

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
_VERSION_PATTERN = r"^[1-9][0-9]{0,8}$"
_HPARAM_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_DVC_MD5_PATTERN = r"^[0-9a-f]{32}(\.dir)?$"
_METHOD_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

_MAX_CLASSES = 1000
_MAX_CLASS_NAME = 128
_MAX_HPARAMS = 64
_MAX_HPARAM_LIST = 64
_MAX_HPARAM_STR = 256
_MAX_DEPTH = 32
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class RequestError(ValueError):
    """A deletion request is malformed, invalid or cannot be queued; the message is one line.

    Attributes:
        recorded: Where a rejected submission was recorded (a file in ``failed/``), if it was.
    """

    recorded: Path | None = None


@dataclass(frozen=True)
class ModelRef:
    """Which model version a request targets: by alias, by version number, or the default alias.

    Example:
        >>> parse_model_ref("mnist@champion")
        ModelRef(name='mnist', alias='champion', version=None)
        >>> str(parse_model_ref("mnist/7"))
        'mnist/7'
    """

    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        if self.version is not None:
            return f"{self.name}/{self.version}"
        return self.name


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``"name"``, ``"name@alias"`` or ``"name/VERSION"``.

    Raises:
        ValueError: The reference is malformed (the message says how).
    """
    if not isinstance(text, str):
        raise ValueError("must be a string like 'name', 'name@alias' or 'name/VERSION'")
    name, alias, version = text, None, None
    if "@" in text:
        name, _, alias = text.partition("@")
    elif "/" in text:
        name, _, raw_version = text.partition("/")
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ValueError(
            f"model name {name[:80]!r} is invalid (letters, digits, '.', '_', '-'; "
            "expected 'name', 'name@alias' or 'name/VERSION')"
        )
    if alias is not None and not re.fullmatch(_ALIAS_PATTERN, alias):
        raise ValueError(f"alias {alias!r} is invalid (letters, digits, '_' or '-')")
    if "@" not in text and "/" in text:
        if not re.fullmatch(_VERSION_PATTERN, raw_version):
            raise ValueError(f"version {raw_version!r} is not a positive integer")
        version = int(raw_version)
    return ModelRef(name=name, alias=alias, version=version)


def validate_request_id(value: object) -> str:
    """Return ``value`` if it is a safe request id (usable as a file name), else raise ValueError.

    Example:
        >>> validate_request_id("gdpr-2025.01_a")
        'gdpr-2025.01_a'
    """
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    if not re.fullmatch(REQUEST_ID_PATTERN, value):
        raise ValueError(
            f"{value[:80]!r} is not a valid request id (1-128 of letters, digits, '.', '_', '-', "
            "starting with a letter or digit)"
        )
    return value


def _to_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


_ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
_LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
_HparamScalar = bool | int | float | str | None
_HparamValue = _HparamScalar | list[_HparamScalar]


_MAX_REPAIR_FILES = 100_000


class RepairSetRequest(BaseModel):
    """The clean images a requester declares for the repair step (``repair_set:``).

    Either ``files``: paths relative to the model's dataset folder (``train/<class>/<file>``),
    or ``fraction`` of the DVC-pinned training split drawn with ``seed`` among the samples that
    are not forgotten. Whether the task takes one, and how large it may be, is checked against
    the model's task and data when the request runs (and at ``unlearn submit``).

    Example:
        >>> RepairSetRequest(fraction=0.01, seed=3).fraction
        0.01
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    files: list[str] | None = None
    fraction: float | None = None
    seed: int = 0

    @field_validator("files", mode="before")
    @classmethod
    def _check_files(cls, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise ValueError("files must be a non-empty list of paths in the dataset folder")
        if len(value) > _MAX_REPAIR_FILES:
            raise ValueError(f"files has {len(value)} entries; at most {_MAX_REPAIR_FILES}")
        for item in value:
            if not isinstance(item, str) or not item.strip() or _CONTROL_CHARS.search(item):
                raise ValueError(f"file {str(item)[:60]!r} is not a path")
            parts = Path(item).parts
            if Path(item).is_absolute() or ".." in parts:
                raise ValueError(f"file {item[:60]!r} must be relative to the dataset folder")
        return value

    @field_validator("fraction", mode="before")
    @classmethod
    def _check_fraction(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"fraction must be a number, not {type(value).__name__}")
        if not 0.0 < float(value) <= 1.0 or not math.isfinite(float(value)):
            raise ValueError(f"fraction {value!r} is not in (0, 1]")
        return float(value)

    @model_validator(mode="after")
    def _one_kind(self) -> RepairSetRequest:
        if (self.files is None) == (self.fraction is None):
            raise ValueError("repair_set takes either files: [...] or fraction: (with seed:)")
        return self

    def describe(self) -> str:
        """One line for a person.

        Example:
            >>> RepairSetRequest(files=["train/a/1.png"]).describe()
            '1 declared file(s)'
        """
        if self.files is not None:
            return f"{len(self.files)} declared file(s)"
        return f"{self.fraction:g} of the training split drawn with seed {self.seed}"


class DeletionRequest(BaseModel):
    """One validated "forget these classes from that model" request.

    ``task`` picks what the classes are and how forgetting is measured: ``classification``
    (default), ``face`` (identities), ``backdoor`` (the target label on the known triggered
    images) or ``segmentation`` (a class at every pixel). It must be the task the model was
    bootstrapped for (its ``task`` registry tag).

    Example:
        >>> r = DeletionRequest(request_id="r1", model="m@champion", forget_classes=[3],
        ...     requested_by="dpo", reason="GDPR Art. 17", received_at="2025-01-31T09:00:00Z")
        >>> r.model_ref()
        ModelRef(name='m', alias='champion', version=None)
        >>> len(r.content_hash())
        64
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    request_id: str
    model: str
    forget_classes: list[int | str]
    requested_by: _ShortText
    reason: _LongText
    received_at: dt.datetime
    deadline: dt.datetime | None = None
    method: str = "delete"
    hparams: dict[str, _HparamValue] = Field(default_factory=dict)
    data_version: str | None = None
    task: str = "classification"
    repair_set: RepairSetRequest | None = None

    @field_validator("task", mode="before")
    @classmethod
    def _check_task(cls, value: object) -> str:
        from delete.applications import list_tasks

        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
        if value not in list_tasks():
            raise ValueError(f"unknown task {value[:40]!r}; known: {', '.join(list_tasks())}")
        return value

    @field_validator("request_id", mode="before")
    @classmethod
    def _check_request_id(cls, value: object) -> str:
        return validate_request_id(value)

    @field_validator("model", mode="before")
    @classmethod
    def _check_model(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
        parse_model_ref(value)
        return value

    @field_validator("forget_classes", mode="before")
    @classmethod
    def _check_forget_classes(cls, value: object) -> list[int | str]:
        if not isinstance(value, list | tuple):
            raise ValueError(
                f"must be a list of class indices or names (e.g. [3]), not {type(value).__name__}"
            )
        if not value:
            raise ValueError("list should have at least 1 item")
        if len(value) > _MAX_CLASSES:
            raise ValueError(f"list has {len(value)} items; at most {_MAX_CLASSES} are allowed")
        out: list[int | str] = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ValueError(f"item {item!r} is neither a class index nor a class name")
            if isinstance(item, int) and item < 0:
                raise ValueError(f"class index {item} is negative")
            if isinstance(item, str) and (
                not item.strip() or len(item) > _MAX_CLASS_NAME or _CONTROL_CHARS.search(item)
            ):
                raise ValueError(
                    f"class name {item[:40]!r} must be 1-{_MAX_CLASS_NAME} printable characters"
                )
            out.append(item)
        duplicates = sorted({repr(c) for c in out if out.count(c) > 1})
        if duplicates:
            raise ValueError(f"duplicated class(es): {', '.join(duplicates)}")
        return out

    @field_validator("received_at", "deadline", mode="before")
    @classmethod
    def _check_datetime_input(cls, value: object) -> object:
        if value is None or isinstance(value, dt.datetime):
            return value
        if isinstance(value, dt.date):  # YAML reads `2025-01-31` as a date
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        if not isinstance(value, str):  # pydantic would read a bare number as a Unix time
            raise ValueError(
                f"must be an ISO 8601 date-time string (e.g. 2025-01-31T09:00:00Z), "
                f"not {type(value).__name__}"
            )
        return value

    @field_validator("received_at", "deadline", mode="after")
    @classmethod
    def _normalise_datetime(cls, value: dt.datetime | None) -> dt.datetime | None:
        return None if value is None else _to_utc(value)

    @field_validator("method", mode="before")
    @classmethod
    def _check_method(cls, value: object) -> str:
        if not isinstance(value, str) or not re.fullmatch(_METHOD_PATTERN, value):
            raise ValueError(f"{value!r} is not a method name (lower-case letters, digits, _ -)")
        return value

    @field_validator("hparams", mode="before")
    @classmethod
    def _check_hparams(cls, value: object) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of name: value, not {type(value).__name__}")
        if len(value) > _MAX_HPARAMS:
            raise ValueError(f"has {len(value)} entries; at most {_MAX_HPARAMS} are allowed")
        for key, item in value.items():
            if not isinstance(key, str) or not re.fullmatch(_HPARAM_KEY_PATTERN, key):
                raise ValueError(f"key {str(key)[:40]!r} is not an identifier")
            items = item if isinstance(item, list) else [item]
            if isinstance(item, list) and len(item) > _MAX_HPARAM_LIST:
                raise ValueError(f"'{key}' has more than {_MAX_HPARAM_LIST} items")
            for scalar in items:
                if not (scalar is None or isinstance(scalar, bool | int | float | str)):
                    raise ValueError(f"'{key}' must be a number, string, boolean or list of them")
                if isinstance(scalar, float) and not math.isfinite(scalar):
                    raise ValueError(f"'{key}' is not a finite number")
                if isinstance(scalar, str) and len(scalar) > _MAX_HPARAM_STR:
                    raise ValueError(f"'{key}' is longer than {_MAX_HPARAM_STR} characters")
        return value

    @field_validator("data_version", mode="before")
    @classmethod
    def _check_data_version(cls, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, str) or not re.fullmatch(_DVC_MD5_PATTERN, value.strip().lower()):
            raise ValueError(f"{str(value)[:80]!r} is not a DVC md5 (32 hex digits, optional .dir)")
        return value.strip().lower()

    @model_validator(mode="after")
    def _check_deadline(self) -> DeletionRequest:
        if self.deadline is not None and self.deadline < self.received_at:
            raise ValueError(
                f"field 'deadline': {self.deadline.isoformat()} is before received_at "
                f"{self.received_at.isoformat()}"
            )
        return self

    def model_ref(self) -> ModelRef:
        """The parsed ``model`` field."""
        return parse_model_ref(self.model)

    def to_json_dict(self) -> dict[str, Any]:
        """Every field as plain JSON types (datetimes as ISO 8601 UTC strings).

        ``repair_set`` appears only when given, so a request without one hashes as it did
        before the field existed (resumed and re-submitted requests keep their content hash).
        """
        out = self.model_dump(mode="json")
        if out.get("repair_set") is None:
            out.pop("repair_set", None)
        return out

    def content_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of every field: equal requests hash equal."""
        return hashlib.sha256(canonical_json(self.to_json_dict()).encode("ascii")).hexdigest()


# --- parsing -----------------------------------------------------------------------------------


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (entity-expansion bombs) and duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in a request", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key; the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _field_problem(loc: str, field: str, msg: str) -> str:
    """Any other pydantic error: the request field it is about (the whole location where the
    field is nested or unknown), then pydantic's message."""
    if not loc:
        return msg
    return f"field '{field if field in DeletionRequest.model_fields else loc}': {msg}"


#: How each pydantic error type reads in one line, from (location, top-level field, message);
#: any other type reads as :func:`_field_problem`. Keyed by pydantic's error type, not by a
#: task: every task's request is the same :class:`DeletionRequest`.
_VALIDATION_FORMATS: dict[str, Callable[[str, str, str], str]] = {
    "missing": lambda loc, field, msg: f"missing required field '{loc}'",
    "extra_forbidden": lambda loc, field, msg: (
        f"unknown field '{loc}' (allowed: {', '.join(DeletionRequest.model_fields)})"
    ),
    "literal_error": lambda loc, field, msg: f"field '{field}': {msg}" if field else msg,
}


def _format_validation_error(source: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    field = str(first["loc"][0]) if first["loc"] else ""
    msg = str(first["msg"]).removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    text = _VALIDATION_FORMATS.get(first["type"], _field_problem)(loc, field, msg)
    more = len(errors) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return one_line(f"{source}: {text}", 400, first_line=False)


def parse_request(data: object, source: str = "request") -> DeletionRequest:
    """Validate an already-parsed mapping; ``source`` prefixes the error message.

    Raises:
        RequestError: The mapping is not a valid request.
    """
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise RequestError(f"{source}: expected a mapping of fields at the top level, got {kind}")
    try:
        return DeletionRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(_format_validation_error(source, exc)) from None
    except RecursionError:
        raise RequestError(f"{source}: the request is nested too deeply") from None


def _flow_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting, counted naively (quotes ignored): an upper bound is enough."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def parse_request_bytes(raw: bytes, name: str) -> DeletionRequest:
    """Decode and validate the bytes of a request file; ``name``'s extension picks the format.

    Raises:
        RequestError: Unknown extension, binary or non-UTF-8 bytes, malformed or truncated
            YAML/JSON, or invalid fields.
    """
    suffix = Path(name).suffix.lower()
    fmt = _SUFFIXES.get(suffix)
    if fmt is None:
        raise RequestError(
            f"{name}: unsupported file type {suffix or '(none)'!r}; use .yaml, .yml or .json"
        )
    if b"\x00" in raw:
        raise RequestError(f"{name}: file is binary (contains NUL bytes), expected UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"{name}: file is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    if not text.strip():
        raise RequestError(f"{name}: file is empty")
    # PyYAML's parser is slow on deep flow nesting; a request needs two levels, not hundreds
    if _flow_depth(text) > _MAX_DEPTH:
        raise RequestError(f"{name}: the request is nested too deeply (over {_MAX_DEPTH} levels)")
    try:
        if fmt == "json":
            data = json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)
        else:
            data = yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"{name}: malformed or truncated JSON at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
        problem = ", ".join(p for p in parts if p) or str(exc)
        raise RequestError(
            one_line(
                f"{name}: malformed or truncated YAML{where}: {problem}", 300, first_line=False
            )
        ) from None
    except RecursionError:
        raise RequestError(f"{name}: the request is nested too deeply") from None
    except ValueError as exc:  # duplicate JSON keys
        raise RequestError(
            one_line(f"{name}: malformed JSON: {exc}", 300, first_line=False)
        ) from None
    return parse_request(data, source=name)


def read_capped(path: Path, max_bytes: int, name: str | None = None) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes, checking the size before reading.

    ``name`` is how errors call the file (default: its file name).
    """
    name = name or path.name
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RequestError(f"{name}: file not found") from None
    except OSError as exc:
        raise RequestError(
            one_line(f"{name}: cannot read: {exc.strerror}", 300, first_line=False)
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise RequestError(f"{name}: not a regular file")
    if info.st_size > max_bytes:
        raise RequestError(f"{name}: file is too large ({info.st_size} bytes; limit {max_bytes})")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as exc:
        raise RequestError(
            one_line(f"{name}: cannot read: {exc.strerror}", 300, first_line=False)
        ) from None
    if len(raw) > max_bytes:
        raise RequestError(f"{name}: file is too large (over {max_bytes} bytes)")
    return raw


def load_request(path: str | os.PathLike[str], max_bytes: int = 65536) -> DeletionRequest:
    """Read and validate a request file (YAML or JSON).

    Raises:
        RequestError: One line naming the file and the problem.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.yaml"
        >>> _ = p.write_text("request_id: r1\\nmodel: m\\nforget_classes: []\\n"
        ...     "requested_by: a\\nreason: b\\nreceived_at: 2025-01-01T00:00:00Z\\n")
        >>> try:
        ...     load_request(p)
        ... except RequestError as exc:
        ...     print(exc)
        r.yaml: field 'forget_classes': list should have at least 1 item
    """
    target = Path(path)
    return parse_request_bytes(read_capped(target, max_bytes), target.name)
