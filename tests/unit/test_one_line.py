"""One ``one_line`` (in ``delete.errors``) and one ``canonical_json`` (in ``tasks._common``)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from delete.errors import one_line

PROJECT = Path(__file__).resolve().parents[2]


def test_first_line_of_an_error_with_its_whitespace_collapsed() -> None:
    assert one_line(ValueError("\n  bad\t  thing  \nmore detail")) == "bad thing"


def test_every_line_joined_when_asked() -> None:
    assert one_line("a:\n  b\n\n  c", first_line=False) == "a: b c"


def test_a_bare_exception_gives_its_type_and_an_empty_text_stays_empty() -> None:
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError("  \n ")) == "RuntimeError"
    assert one_line("") == "" and one_line(" \n ", first_line=False) == ""


def test_a_long_line_is_cut_to_the_limit_and_says_so() -> None:
    assert one_line("abcdefghij", limit=10) == "abcdefghij"
    assert one_line("abcdefghijk", limit=10) == "abcdefg..."
    assert len(one_line(OSError("x" * 1000))) == 400


def test_the_pipeline_uses_the_core_librarys_one_line() -> None:
    from tasks import _common

    assert _common.one_line is one_line


def test_canonical_json_is_the_hashing_spelling() -> None:
    from tasks._common import canonical_json
    from tasks.requests import canonical_json as from_requests

    assert from_requests is canonical_json  # audit and request digests share it
    assert canonical_json({"b": 1, "a": [None, "é"]}) == '{"a":[null,"\\u00e9"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})  # no NaN: it is not JSON
    with pytest.raises(TypeError):
        canonical_json({"x": object()})  # nothing hashed as its repr


def _helpers_defined(names: set[str]) -> list[str]:
    found = []
    for folder in ("delete", "tasks", "flows", "deploy"):
        for path in sorted((PROJECT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.FunctionDef) and node.name in names:
                    found.append(f"{path.relative_to(PROJECT)}:{node.name}")
    return found


def test_each_helper_is_defined_once() -> None:
    assert _helpers_defined({"one_line", "_one_line"}) == ["delete/errors.py:one_line"]
    assert _helpers_defined({"canonical_json", "_canonical_json"}) == [
        "tasks/_common.py:canonical_json"
    ]
