"""The core library stays pure PyTorch: no orchestration imports anywhere in delete/."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "dvc", "evidently"}
CORE = Path(__file__).resolve().parents[2] / "delete"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_orchestration_package() -> None:
    offenders = {
        str(path.relative_to(CORE.parent)): sorted(_imported_roots(path) & FORBIDDEN)
        for path in CORE.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"delete/ must stay free of orchestration imports: {offenders}"


def test_the_check_sees_every_core_file() -> None:
    assert len(list(CORE.rglob("*.py"))) >= 10


def test_no_init_shadows_the_mlflow_package() -> None:
    assert not (CORE.parent / "mlflow" / "__init__.py").exists()
