"""The package's layout stays a house with floors: imports only run downwards, no circles, small
modules, and no torch where images are decoded, outputs planned and written, or cards read.

Read from the source with ``ast`` (every import, also those inside functions), so a new
upward import or circle fails here the day it is written.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deeplabcli"

#: floor of each part of the package: a module may import from its own part and lower floors
FLOORS: dict[str, int] = {
    # ground floor: shared by everyone, importing only each other
    "errors": 0, "files": 0, "progress": 0, "signals": 0, "distributed": 0, "config": 0,
    "_exports": 0,
    "models": 1, "data": 1, "runtimes": 1,
    "weights": 2,
    "exporting": 3,
    "inference": 4,
    "prediction": 5, "evaluation": 5,
    "training": 6,
    "cli": 7,
}  # fmt: skip
#: modules above every floor (they only name the others, or start the CLI)
ENTRY_POINTS = {"deeplabcli", "deeplabcli.__main__"}
MAX_LINES = 350
#: modules that must import without torch (a one-photo predict on a non-torch backend)
TORCH_FREE = (
    "deeplabcli.config",
    "deeplabcli.data.images",
    "deeplabcli.data.palette",
    "deeplabcli.prediction.inputs",
    "deeplabcli.prediction.outputs",
    "deeplabcli.weights.cards",
    "deeplabcli.runtimes.metadata",
    "deeplabcli.runtimes.sessions",
    "deeplabcli.runtimes.exported",
    "deeplabcli.runtimes.extras",
    "deeplabcli.runtimes.cache",
    "deeplabcli.exporting.references",
    "deeplabcli.prediction.results",
    "deeplabcli.prediction.light",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the deeplabcli modules (or packages) that ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("deeplabcli"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("deeplabcli"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
    found.discard(name)
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def part_of(name: str) -> str:
    return name.split(".")[1] if "." in name else name


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_part_of_the_package_has_a_floor() -> None:
    parts = {part_of(name) for name in graph()} - {"deeplabcli", "__main__"}
    assert parts <= set(FLOORS), f"give these a floor in FLOORS: {sorted(parts - set(FLOORS))}"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """``source -> target`` for each import that runs to a higher floor, or sideways to another
    part of the same floor (above the ground floor)."""
    upward = []
    for source, targets in edges.items():
        if source in ENTRY_POINTS:
            continue
        floor = FLOORS[part_of(source)]
        for target in targets:
            if target == "deeplabcli":  # `from .. import __version__`
                continue
            theirs = FLOORS[part_of(target)]
            same_part = part_of(target) == part_of(source)
            if theirs > floor or (theirs == floor and floor > 0 and not same_part):
                upward.append(f"{source} -> {target}")
    return sorted(upward)


def circles_in(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``edges`` (each as the modules around it, first one repeated)."""
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in edges:
                continue
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state and node not in ENTRY_POINTS:
            visit(node)
    return circles


def test_imports_only_run_downwards() -> None:
    upward = upward_imports(graph())
    assert not upward, "imports that run up or sideways:\n" + "\n".join(upward)


def test_no_import_circles() -> None:
    circles = circles_in(graph())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_modules_stay_small() -> None:
    sizes = {
        str(p.relative_to(PACKAGE.parent)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    large = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not large, f"modules over {MAX_LINES} lines (split them by idea): {large}"


def test_the_checker_sees_upward_imports_and_circles() -> None:
    """The reader resolves relative imports, also inside functions, and the two checks flag what
    they should (so the tests above can fail)."""
    outputs = imports_of(PACKAGE / "prediction" / "outputs.py")
    assert {"deeplabcli.data.images", "deeplabcli.errors", "deeplabcli.files"} <= outputs
    protocol = imports_of(PACKAGE / "evaluation" / "protocol.py")
    assert "deeplabcli.weights.resolve" in protocol  # imported inside run_evaluation
    assert "deeplabcli.distributed" in imports_of(PACKAGE / "training" / "loop.py")
    fake = {
        "deeplabcli.models.a": {"deeplabcli.training.b"},  # up
        "deeplabcli.prediction.c": {"deeplabcli.evaluation.d"},  # sideways
        "deeplabcli.evaluation.d": {"deeplabcli.evaluation.e"},
        "deeplabcli.evaluation.e": {"deeplabcli.evaluation.d", "deeplabcli.errors"},  # circle
    }
    assert upward_imports(fake) == [
        "deeplabcli.models.a -> deeplabcli.training.b",
        "deeplabcli.prediction.c -> deeplabcli.evaluation.d",
    ]
    assert circles_in(fake) == [
        ["deeplabcli.evaluation.d", "deeplabcli.evaluation.e", "deeplabcli.evaluation.d"]
    ]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_light_modules_do_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
