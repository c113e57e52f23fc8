"""The core library stays pure PyTorch: no orchestration imports anywhere in delete/."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "dvc", "evidently"}
CORE = Path(__file__).resolve().parents[2] / "delete"

#: delete/'s subpackages: a new one is added here on purpose, so that the check is known to
#: cover it (and a check pointed at the wrong folder fails here instead of scanning nothing).
SUBPACKAGES = {
    "applications",
    "bench",
    "data",
    "methods",
    "metrics",
    "models",
    "repair",
    "selection",
}
#: Top-level modules that must be scanned (others may be added freely).
MODULES = {"__init__.py", "api.py", "checkpoint.py", "engine.py", "export.py", "training.py"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _scanned(core: Path) -> list[Path]:
    return sorted(core.rglob("*.py"))


def _offenders(core: Path) -> dict[str, list[str]]:
    """File (relative to ``core``'s parent) -> the forbidden packages it imports."""
    found = {
        str(path.relative_to(core.parent)): sorted(_imported_roots(path) & FORBIDDEN)
        for path in _scanned(core)
    }
    return {k: v for k, v in found.items() if v}


def test_core_imports_no_orchestration_package() -> None:
    offenders = _offenders(CORE)
    assert not offenders, f"delete/ must stay free of orchestration imports: {offenders}"


def test_the_check_sees_every_core_file() -> None:
    scanned = _scanned(CORE)
    top = {p.relative_to(CORE).parts[0] for p in scanned}
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == SUBPACKAGES
    assert top >= SUBPACKAGES | MODULES
    for package in SUBPACKAGES:  # every file of every subpackage, however deep
        on_disk = {p for p in (CORE / package).rglob("*.py")}
        assert on_disk and on_disk <= set(scanned), package


def test_the_check_finds_a_planted_import_in_every_subpackage(tmp_path: Path) -> None:
    """A forbidden import planted in a copy of delete/, one per subpackage (in its deepest
    module, inside a function, in every spelling), is reported for exactly those files."""
    copy = tmp_path / "delete"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    spellings = ["import mlflow", "from prefect import flow", "import dvc.api", "import evidently"]
    planted = {}
    for n, package in enumerate(sorted(SUBPACKAGES | {"api.py"})):
        target = copy / package
        if target.is_dir():
            target = max(target.rglob("*.py"), key=lambda p: (len(p.parts), str(p)))
        spelling = spellings[n % len(spellings)]
        with target.open("a") as handle:
            handle.write(f"\n\ndef _planted() -> None:\n    {spelling}\n")
        planted[str(target.relative_to(tmp_path))] = [spelling.split()[1].split(".")[0]]
    assert _offenders(copy) == planted


def test_no_init_shadows_the_mlflow_package() -> None:
    assert not (CORE.parent / "mlflow" / "__init__.py").exists()
