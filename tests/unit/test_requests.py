"""Deletion requests: validation, canonical hashing, and one-line errors for hostile files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from tasks.requests import (
    DeletionRequest,
    ModelRef,
    RequestError,
    load_request,
    parse_request,
    parse_request_bytes,
)
from tests.unit._requests import request_fields as _fields

VALID_YAML = """\
request_id: gdpr-2025-0042
model: mnist5k-classifier@champion
forget_classes: [3, "seven"]
requested_by: dpo@example.com
reason: GDPR Art. 17 erasure request
received_at: 2025-01-31T09:00:00Z
deadline: 2025-03-01T00:00:00+01:00
hparams: {epochs: 2, lr: 0.001}
data_version: 0123456789abcdef0123456789abcdef.dir
"""


def _error_of(data: Any, source: str = "request.yaml") -> str:
    with pytest.raises(RequestError) as info:
        parse_request(data, source)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: ")
    return message


def _file_error(tmp_path: Path, name: str, content: bytes | str, **kw: Any) -> str:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(RequestError) as info:
        load_request(path, **kw)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500
    return message


def test_valid_yaml_loads_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(VALID_YAML)
    r = load_request(path)
    assert r.request_id == "gdpr-2025-0042"
    assert r.forget_classes == [3, "seven"]
    assert r.model_ref() == ModelRef("mnist5k-classifier", "champion", None)
    assert r.received_at == dt.datetime(2025, 1, 31, 9, tzinfo=dt.UTC)
    assert r.deadline == dt.datetime(2025, 2, 28, 23, tzinfo=dt.UTC)  # converted to UTC
    assert r.method == "delete" and r.task == "classification"
    assert r.hparams == {"epochs": 2, "lr": 0.001}
    assert r.to_json_dict()["received_at"] == "2025-01-31T09:00:00Z"


def test_json_and_yaml_of_the_same_request_hash_equal(tmp_path: Path) -> None:
    yaml_path = tmp_path / "r.yaml"
    yaml_path.write_text(VALID_YAML)
    from_yaml = load_request(yaml_path)
    json_path = tmp_path / "r.json"
    json_path.write_text(json.dumps(from_yaml.to_json_dict()))
    from_json = load_request(json_path)
    assert from_json == from_yaml
    assert from_json.content_hash() == from_yaml.content_hash()
    assert len(from_yaml.content_hash()) == 64


def test_content_hash_ignores_timezone_spelling_but_not_content() -> None:
    a = parse_request(_fields(received_at="2025-01-31T10:00:00+01:00"))
    b = parse_request(_fields(received_at="2025-01-31T09:00:00Z"))
    c = parse_request(_fields(received_at="2025-01-31T09:00:00"))  # naive = UTC
    assert a.content_hash() == b.content_hash() == c.content_hash()
    assert parse_request(_fields(forget_classes=[4])).content_hash() != a.content_hash()


def test_model_references() -> None:
    assert parse_request(_fields(model="m/7")).model_ref() == ModelRef("m", None, 7)
    assert parse_request(_fields(model="m")).model_ref() == ModelRef("m", None, None)
    assert str(parse_request(_fields(model="m@challenger")).model_ref()) == "m@challenger"


def test_yaml_bare_date_is_midnight_utc() -> None:
    r = parse_request(_fields(received_at=dt.date(2025, 1, 2)))
    assert r.received_at == dt.datetime(2025, 1, 2, tzinfo=dt.UTC)


def test_request_is_frozen() -> None:
    r = parse_request(_fields())
    with pytest.raises(ValueError):
        r.request_id = "other"  # type: ignore[misc]


def test_empty_forget_classes_message_names_field() -> None:
    assert _error_of(_fields(forget_classes=[])) == (
        "request.yaml: field 'forget_classes': list should have at least 1 item"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"request_id": "../../x"}, "field 'request_id': '../../x' is not a valid request id"),
        ({"request_id": "a/b"}, "field 'request_id'"),
        ({"request_id": "x" * 129}, "field 'request_id'"),
        ({"request_id": 42}, "field 'request_id': must be a string"),
        ({"forget_classes": [1, 1]}, "field 'forget_classes': duplicated class(es): 1"),
        ({"forget_classes": [True]}, "field 'forget_classes': item True is neither"),
        ({"forget_classes": [-1]}, "field 'forget_classes': class index -1 is negative"),
        ({"forget_classes": 3}, "field 'forget_classes': must be a list"),
        ({"forget_classes": [""]}, "field 'forget_classes': class name ''"),
        ({"forget_classes": list(range(1001))}, "at most 1000"),
        ({"model": "m@"}, "field 'model': alias ''"),
        ({"model": "m/0"}, "field 'model': version '0' is not a positive integer"),
        ({"model": "../m"}, "field 'model': model name '..' is invalid"),
        ({"requested_by": "  "}, "field 'requested_by': string should have at least 1 character"),
        ({"reason": "x" * 5000}, "field 'reason': string should have at most 4000 characters"),
        ({"received_at": 1700000000}, "field 'received_at': must be an ISO 8601"),
        ({"received_at": "yesterday"}, "field 'received_at': input should be a valid datetime"),
        ({"deadline": "2020-01-01T00:00:00Z"}, "field 'deadline': 2020-01-01"),
        ({"method": "DELETE!"}, "field 'method'"),
        ({"hparams": {"lr": float("nan")}}, "field 'hparams': 'lr' is not a finite number"),
        ({"hparams": {"x": {"nested": 1}}}, "field 'hparams': 'x' must be a number"),
        ({"hparams": {"bad key": 1}}, "field 'hparams': key 'bad key' is not an identifier"),
        ({"hparams": [1]}, "field 'hparams': must be a mapping"),
        ({"data_version": "abc"}, "field 'data_version': 'abc' is not a DVC md5"),
        ({"task": "detection"}, "field 'task': unknown task 'detection'; known: backdoor"),
        ({"unexpected": 1}, "unknown field 'unexpected'"),
        ({"reason": ...}, "missing required field 'reason'"),
    ],
)
def test_invalid_fields_give_one_line_naming_the_field(
    overrides: dict[str, Any], expected: str
) -> None:
    assert expected in _error_of(_fields(**overrides))


def test_several_problems_are_counted_on_one_line() -> None:
    message = _error_of({"request_id": "r"})
    assert message == "request.yaml: missing required field 'model' (and 4 more problems)"


def test_top_level_must_be_a_mapping() -> None:
    assert "expected a mapping" in _error_of([1, 2])
    assert "got empty" in _error_of(None)


def test_data_version_is_normalised_to_lower_case() -> None:
    r = parse_request(_fields(data_version="0123456789ABCDEF0123456789ABCDEF"))
    assert r.data_version == "0123456789abcdef0123456789abcdef"


# --- hostile files -------------------------------------------------------------------------


def test_file_too_large_is_refused_before_reading(tmp_path: Path) -> None:
    message = _file_error(tmp_path, "big.yaml", "a: " + "x" * 70_000)
    assert message.startswith("big.yaml: file is too large (70003 bytes; limit 65536)")
    assert "too large" in _file_error(tmp_path, "small.yaml", VALID_YAML, max_bytes=100)


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    assert "binary" in _file_error(tmp_path, "b.yaml", b"\x89PNG\r\n\x1a\n\x00\x00")
    latin1 = VALID_YAML.replace("dpo@", "d\xe9po@").encode("latin-1")
    assert "not UTF-8 text (invalid byte at offset" in _file_error(tmp_path, "l.yaml", latin1)


def test_utf8_with_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID_YAML.encode())
    assert load_request(path).request_id == "gdpr-2025-0042"


def test_truncated_yaml_and_json(tmp_path: Path) -> None:
    cut = VALID_YAML[: VALID_YAML.index("[3,") + 3]
    assert "malformed or truncated YAML at line 3" in _file_error(tmp_path, "t.yaml", cut)
    text = json.dumps(_fields())
    message = _file_error(tmp_path, "t.json", text[: len(text) // 2])
    assert "malformed or truncated JSON at line 1" in message
    # cut at a line boundary: valid YAML, so the missing fields are named
    lines = VALID_YAML.splitlines(keepends=True)
    assert "missing required field" in _file_error(tmp_path, "t2.yaml", "".join(lines[:3]))


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, 9):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n"
    message = _file_error(tmp_path, "bomb.yaml", bomb)
    assert "YAML aliases (*name) are not allowed" in message


def test_yaml_merge_key_alias_is_refused(tmp_path: Path) -> None:
    doc = VALID_YAML + "base: &b {x: 1}\nother:\n  <<: *b\n"
    assert "aliases" in _file_error(tmp_path, "m.yaml", doc)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    assert "duplicate key 'model'" in _file_error(tmp_path, "d.yaml", VALID_YAML + "model: m2\n")
    doc = '{"request_id": "a", "request_id": "b"}'
    assert "duplicate key 'request_id'" in _file_error(tmp_path, "d.json", doc)


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    doc = VALID_YAML + "x: !!python/object/apply:os.system ['true']\n"
    assert "malformed or truncated YAML" in _file_error(tmp_path, "tag.yaml", doc)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    assert "nested too deeply" in _file_error(tmp_path, "deep.json", "[" * 50_000)
    assert "nested too deeply" in _file_error(tmp_path, "deep.yaml", "[" * 3_000)
    block = "".join(" " * i + "k:\n" for i in range(350))  # indentation nesting, ~61 KB
    assert "nested too deeply" in _file_error(tmp_path, "block.yaml", block)


def test_other_file_problems(tmp_path: Path) -> None:
    assert "empty" in _file_error(tmp_path, "e.yaml", "  \n")
    assert "unsupported file type '.txt'" in _file_error(tmp_path, "r.txt", VALID_YAML)
    two_docs = VALID_YAML + "---\na: 1\n"
    assert "expected a single document" in _file_error(tmp_path, "two.yaml", two_docs)
    with pytest.raises(RequestError, match=r"^nope.yaml: file not found$"):
        load_request(tmp_path / "nope.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(RequestError, match="not a regular file"):
        load_request(tmp_path / "dir.yaml")


def test_parse_request_bytes_uses_the_name_for_format() -> None:
    raw = json.dumps(_fields()).encode()
    assert parse_request_bytes(raw, "x.json").request_id == "r-1"
    assert isinstance(parse_request_bytes(raw, "x.yaml"), DeletionRequest)  # JSON is YAML too
