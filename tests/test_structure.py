"""The structure the bugs grew in stays fixed: no import circles between gradfree's own modules,
counting imports inside functions too (those hid the old circles)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("projector", "baselines", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def _imports(path: Path, modules: set[str], name: str) -> set[str]:
    out = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is no edge
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules), name) for name, path in modules.items()}


def _cycle(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_circles():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_checker_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _is_cli(name: str) -> bool:
    return name == "benchmarks.cli" or name.startswith("benchmarks.cli.")


def test_nothing_imports_the_command_line():
    importers = [n for n, deps in _graph().items() if not _is_cli(n) and any(_is_cli(d) for d in deps)]
    assert importers == []


def test_argument_parsing_lives_in_the_command_line_only():
    offenders = [name for name, path in _modules().items()
                 if not _is_cli(name) and "argparse" in {a.name for node in ast.walk(ast.parse(path.read_text()))
                                                                 if isinstance(node, ast.Import) for a in node.names}]
    assert offenders == []


#: Layers, lowest first: a module may import its own layer and those below, never one above.
LAYERS = (
    ("projector", ("projector",)),
    ("core", ("benchmarks.core",)),
    ("methods", ("benchmarks.methods", "baselines")),
    ("harness", ("benchmarks.harness",)),
    ("report", ("benchmarks.report",)),
    ("perf", ("benchmarks.perf",)),
    ("cli", ("benchmarks.cli",)),
)


def _layer(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _upward_imports(graph) -> list[str]:
    bad = []
    for name, deps in graph.items():
        mine = _layer(name)
        for dep in deps:
            theirs = _layer(dep)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{name} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[theirs][0]})")
    return sorted(bad)


def test_every_module_belongs_to_a_layer():
    stray = [n for n in _modules() if _layer(n) is None and n not in ("benchmarks",)]
    assert stray == []


def test_imports_point_down_the_layers_only():
    assert _upward_imports(_graph()) == []


def test_the_layer_checker_finds_an_upward_import():
    graph = {"benchmarks.core.data": {"benchmarks.harness.results"}, "benchmarks.harness.results": {"projector"}}
    assert _upward_imports(graph) == ["benchmarks.core.data (core) imports benchmarks.harness.results (harness)"]


#: The modules that may hold collections of registered names: the registries themselves.
REGISTRIES = {"benchmarks.harness.registry", "benchmarks.core.datasets", "projector.projections",
              "benchmarks.methods.projections", "benchmarks.core.cuts"}
#: Benchmarks that name what they measure, as suites do: ``gradfree perf``'s sections.
NAMING_ALLOWED = {"benchmarks.perf.task"}


def _registered_names() -> dict[str, set[str]]:
    from benchmarks.core.datasets import DATASETS
    from benchmarks.harness.registry import REGISTRY
    from projector.projections import PROJECTIONS

    return {"method": set(REGISTRY), "dataset": set(DATASETS), "projection": set(PROJECTIONS) | {"kernel"}}


def _name_collections(tree: ast.AST, names: dict[str, set[str]]) -> list[str]:
    """Literal tuples, lists, sets and dict keys holding two or more names of one registry."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elts = node.elts
        elif isinstance(node, ast.Dict):
            elts = [k for k in node.keys if k is not None]
        else:
            continue
        strings = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        for kind, registered in names.items():
            if len(strings & registered) >= 2:
                found.append(f"line {node.lineno}: {kind}s {sorted(strings & registered)}")
    return found


def test_no_module_but_a_registry_keeps_a_list_of_registered_names():
    names = _registered_names()
    offenders = {name: hits for name, path in _modules().items() if name not in REGISTRIES | NAMING_ALLOWED
                 and (hits := _name_collections(ast.parse(path.read_text()), names))}
    assert offenders == {}


def test_the_list_checker_finds_a_list_of_names():
    names = {"projection": {"gaussian", "linear", "none"}}
    assert _name_collections(ast.parse('S = ("gaussian", "linear")\nT = {"gaussian": 4}'), names) == \
        ["line 1: projections ['gaussian', 'linear']"]
    assert _name_collections(ast.parse('x = ("gaussian", "other")'), names) == []


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
#: Functions allowed past MAX_FUNCTION_LINES (at most five), each with its reason.
LONG_FUNCTIONS = {
    "baselines.airbench.Airbench.run": "airbench94's published training loop, kept whole to be read beside the "
                                       "original line by line",
    "baselines.wrn22._runner_callback": "a fastai Callback class defined in a closure over the runner's clock",
    "baselines._training.fit": "the runner's contract for every trainer as one loop: warm-up, epochs, "
                               "checkpoints, early stopping, the best epoch",
    "projector.gaussian._RandomProjection._blocks": "the projection's hot generator: its buffers, reused "
                                                    "from block to block, live in one frame",
    "benchmarks.perf.seed_shape.section_seed_shape": "one measured shape as a linear script, each figure "
                                                     "recorded as it is measured",
}


def _long_functions() -> dict[str, int]:
    out = {}
    for name, path in _modules().items():
        def walk(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qual = f"{prefix}.{child.name}"
                    length = child.end_lineno - child.lineno + 1
                    if not isinstance(child, ast.ClassDef) and length > MAX_FUNCTION_LINES:
                        out[qual] = length
                    walk(child, qual)
        walk(ast.parse(path.read_text()), name)
    return out


def test_no_function_is_longer_than_60_lines_but_the_listed_exceptions():
    assert len(LONG_FUNCTIONS) <= 5
    assert set(_long_functions()) == set(LONG_FUNCTIONS)  # an exception that got short leaves the list too


def test_no_file_is_longer_than_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}


#: Members documented once, elsewhere: a method class's protocol members (on benchmarks.core.protocol.Method)
#: and a torch module's ``forward`` (its class says what it computes).
DOCUMENTED_ELSEWHERE = {"run", "flops", "memory_bytes", "label", "forward"}


def _undocumented(tree: ast.AST, module: str) -> list[str]:
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and not child.name.startswith("_"):
                in_class = bool(prefix)
                if ast.get_docstring(child) is None and not (in_class and child.name in DOCUMENTED_ELSEWHERE):
                    out.append(f"{module}.{prefix}{child.name}")
                if isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")
    walk(tree, "")
    return out


def test_every_public_definition_has_a_docstring():
    missing = [name for module, path in _modules().items() for name in _undocumented(ast.parse(path.read_text()),
                                                                                      module)]
    assert missing == []


def test_the_docstring_checker_finds_one_missing():
    tree = ast.parse("def f():\n    pass\nclass C:\n    '''doc'''\n    def run(self):\n        pass\n"
                     "    def g(self):\n        pass\n")
    assert _undocumented(tree, "m") == ["m.f", "m.C.g"]
