"""The shape of the code, held: no import cycle, no private name imported across modules, no module
over 600 lines, and the layering rules of docs/CONTRIBUTING.md (each a test that fails the day
someone writes the copy again)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "retain"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        name = "retain." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str]]:
    """(module imported, name imported or "") of every retain import in ``name``, lazy ones too."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("retain"):
                found += [(base, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("retain")]
    return found


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for base, name in _imports(m):
            target = f"{base}.{name}" if f"{base}.{name}" in MODULES else base
            if target in MODULES and target != m:
                edges[m].add(target)
    return edges


def test_no_import_cycle():
    edges, state, cycles = _graph(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                cycles.append(path[path.index(t):] + [t] if t in path else [m, t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"
    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_imported_across_modules():
    found = [f"{m} imports {base}.{name}" for m in MODULES for base, name in _imports(m)
             if name.startswith("_") and not name.startswith("__")]
    assert not found, found


def test_no_module_over_600_lines():
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert not long, long


@pytest.mark.parametrize("module, forbidden", [
    ("retain.data", "retain.probes"),  # both stand on retain.formats
    ("retain.probes", "retain.data"),
    ("retain.report", "retain.experiments"),  # renders files, never recomputes
    ("retain.metrics", "retain.probes"),  # pure
    ("retain.metrics", "retain.train"),
    ("retain.metrics", "retain.experiments"),
    ("retain.train", "retain.experiments"),  # knows no runner and no adapter
    ("retain.train", "retain.integrations"),
    ("retain.strategies", "retain.experiments"),
    ("retain.strategies", "retain.report"),
])
def test_layering(module, forbidden):
    bad = [f"{m} -> {base}" for m in MODULES if m == module or m.startswith(module + ".")
           for base, _ in _imports(m) if base == forbidden or base.startswith(forbidden + ".")]
    assert not bad, bad


def test_the_library_never_imports_a_command_line_module():
    def is_cli(m: str) -> bool:  # `python -m retain` (retain.__main__) is a command line too
        return m.rpartition(".")[2] in ("cli", "__main__") or m.endswith("_cli")
    bad = [f"{m} -> {base}" for m in MODULES if not is_cli(m)
           for base, _ in _imports(m) if is_cli(base)]
    assert not bad, bad


def test_the_trainer_adapter_writes_probes_and_guards_nothing_itself():
    """integrations/ maps the Trainer's events onto retain.train.callbacks: results, metrics,
    probing and the guard's decisions are those callbacks' (one recipe, not two)."""
    text = "\n".join(p.read_text(encoding="utf-8") for m, p in MODULES.items()
                     if m.startswith("retain.integrations"))
    for copy in ("write_json_atomic", "write_summary_csv", "append_jsonl", "probes import evaluate",
                 "metrics.outcome", "Guard(", ".decide(", "load_state(model, d."):
        assert copy not in text, f"retain.integrations does {copy} itself"
