"""The package's folders import one way (destination_planhat/__init__.py draws the layers).

Read from the source (every `import` and `from ... import`, at any depth, not only at the top of a
module), so a function-level import against the direction fails as surely as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "destination_planhat"
NAME = PACKAGE.name

# Lowest first: a module may import from its own layer and the layers before it.
LAYERS: list[set[str]] = [
    {"planhat"},
    {"config"},
    {"mapping"},
    {"rejected"},
    {"sync"},
    {"reading"},
    {"destination", "discover", "run", "cancel_signals", "__init__"},
    {"testing"},
]


def layer_of(module: str) -> int:
    """`destination_planhat.sync.writer` -> the index of the layer `sync` is in."""
    parts = module.split(".")
    room = parts[1] if len(parts) > 1 else "__init__"
    for index, rooms in enumerate(LAYERS):
        if room in rooms:
            return index
    raise AssertionError(f"{module}: its room '{room}' is in no layer of LAYERS; add it where it belongs")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else [*parts[:-1], "__init__"]
    return ".".join(parts)


def is_room(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module of this package) for every import in the file."""
    found: list[tuple[int, str]] = []
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == NAME]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != NAME:
                continue
            if target == NAME:  # `from destination_planhat import x`: x is a module, or a name of __init__
                found += [
                    (node.lineno, f"{NAME}.{alias.name}" if is_room(alias.name) else NAME) for alias in node.names
                ]
            else:
                found.append((node.lineno, target))
    return found


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for _, target in imports_of(path, module):
            if target == NAME:  # the package itself (to find its folder): every module imports it anyway
                continue
            # `destination_planhat.sync` names the folder: its __init__
            targets.add(
                target if target in modules else f"{target}.__init__" if f"{target}.__init__" in modules else target
            )
        graph[module] = {target for target in targets if target in modules and target != module}
    return graph


def test_every_room_of_the_package_is_in_a_layer():
    for module in package_modules():
        layer_of(module)


def test_imports_go_one_way():
    against = []
    for module, path in package_modules().items():
        mine = layer_of(module)
        for line, target in imports_of(path, module):
            if target == NAME:
                continue
            if layer_of(target) > mine:
                against.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target}")
    assert not against, "imports against the direction of destination_planhat/__init__.py:\n" + "\n".join(against)


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of the graph, as the modules around it, or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_module_imports_itself_round_a_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, has_cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
    ],
)
def test_the_cycle_finder_finds_cycles_and_only_cycles(graph, has_cycle):
    assert bool(find_cycle(graph)) is has_cycle


def test_the_direction_check_sees_an_import_against_it(tmp_path):
    """A planhat/ module that imports sync/ is reported (the check can fail)."""
    fake = tmp_path / NAME / "planhat" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from destination_planhat.sync.writer import PlanhatWriter\n")
    [(line, target)] = imports_of(fake, f"{NAME}.planhat.x")
    assert (line, target) == (2, f"{NAME}.sync.writer")
    assert layer_of(target) > layer_of(f"{NAME}.planhat.x")


def test_relative_imports_are_resolved(tmp_path):
    fake = tmp_path / "y.py"
    fake.write_text("from ..sync import writer\nfrom .api import Target\n")
    assert imports_of(fake, f"{NAME}.planhat.y") == [(1, f"{NAME}.sync"), (2, f"{NAME}.planhat.api")]
