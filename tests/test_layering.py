"""The dependency direction of DESIGN.md: aspo -> logs_schema; app -> logs_schema; never the reverse."""
import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_logs_schema_imports_neither_torch_nor_streamlit_nor_aspo():
    for path, names in imported_modules("logs_schema").items():
        assert not names & {"torch", "streamlit", "aspo", "aspo_dashboard", "transformers"}, path


# The one documented exception: app/data.py reaches aspo.counterfactual (which must run aspo.losses itself,
# never a copy of its math) through a lazy import inside a function, so the dashboard starts without torch.
APP_EXCEPTION = ("app/data.py", "aspo.counterfactual")


def _modules(node) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    return {node.module} if isinstance(node, ast.ImportFrom) and node.module and not node.level else set()


def lazy_imports(path: Path) -> set[str]:
    """Modules imported inside a function body of `path` (not at module level)."""
    found = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found |= set().union(*(_modules(n) for n in ast.walk(fn)))
    return found


def test_app_never_imports_the_trainer():
    for path, names in imported_modules("app").items():
        if path == APP_EXCEPTION[0]:
            lazy = lazy_imports(ROOT / path)
            assert {m for m in lazy if m.split(".")[0] == "aspo"} == {APP_EXCEPTION[1]}, lazy
            top = ast.parse((ROOT / path).read_text()).body  # module level: no aspo at all
            assert not any(m.split(".")[0] == "aspo" for n in top for m in _modules(n))
            names = names - {"aspo"}
        assert not names & {"torch", "aspo", "transformers"}, path


def test_trainer_never_imports_the_app():
    for path, names in imported_modules("aspo").items():
        assert not names & {"aspo_dashboard", "streamlit"}, path


# ---------------------------------------------------------------- no import circles
def product_modules() -> dict[str, Path]:
    """Every module of every package the wheel installs (pyproject's packages and package-dir), by import name:
    new packages are covered as soon as they are packaged."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup.get("package-dir", {})
    found = {}
    for package in setup["packages"]:
        top, _, rest = package.partition(".")
        folder = ROOT / dirs.get(top, top) / rest.replace(".", "/")
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def import_edges(name: str, path: Path, modules) -> set[str]:
    """The product modules `name` imports anywhere in its file: module level, inside functions (a lazy import
    hides a circle, it does not open it) and relative imports alike."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        edges |= {t for t in targets if t in modules and t != name}
    return edges


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while not part or part[-1] != v:
                part.append(stack.pop())
                on_stack.discard(part[-1])
            if len(part) > 1:
                circles.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_the_circle_finder_finds_a_lazy_circle(tmp_path):
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import g  # a function-level import\n")
    (tmp_path / "c.py").write_text("import a\n")
    modules = {p.stem: p for p in tmp_path.glob("*.py")}
    graph = {m: import_edges(m, p, modules) for m, p in modules.items()}
    assert import_circles(graph) == [["a", "b"]]


# Circles another change still has open (each with its way out); a new circle anywhere fails the test, and so does
# an entry here once its circle is gone (the list only shrinks).
KNOWN_CIRCLES: list[list[str]] = []


def test_no_import_circle_between_product_modules():
    modules = product_modules()
    assert {"aspo.cli", "aspo.trainer", "logs_schema.queries", "aspo_dashboard.data"} <= set(modules)
    graph = {m: import_edges(m, p, modules) for m, p in modules.items()}
    assert import_circles(graph) == KNOWN_CIRCLES


# ---------------------------------------------------------------- charts, report, dashboard (issue 21)
# charts/report -> logs_schema; app -> charts, logs_schema; aspo locates the report (a child process), never imports it
FORBIDDEN = {
    "aspo_charts": {"streamlit", "torch", "transformers", "aspo", "aspo_dashboard", "aspo_report"},
    "aspo_report": {"streamlit", "torch", "transformers", "aspo", "aspo_dashboard"},
    "app": {"aspo_report"},
    "aspo": {"aspo_charts", "aspo_report", "aspo_dashboard"},
    "logs_schema": {"aspo_charts", "aspo_report", "aspo_dashboard"},
}


def test_charts_report_and_dashboard_keep_the_dependency_direction():
    for package, forbidden in FORBIDDEN.items():
        found = imported_modules(package)
        assert found, package
        for path, names in found.items():
            assert not names & forbidden, (path, names & forbidden)
    uses = set().union(*imported_modules("app").values())
    assert {"aspo_charts", "logs_schema"} <= uses and "aspo_charts" in set().union(*imported_modules("aspo_report").values())


def test_aspo_dashboard_is_app_for_a_reader_an_ide_and_a_checkout_without_install(tmp_path):
    """The checkout's aspo_dashboard is a symlink to app/ (git mode 120000), so the installed name resolves with no
    `pip install -e .`: here the editable install's finder is removed and only notebooks/_paths.py sets the path."""
    import subprocess
    import sys
    link = ROOT / "aspo_dashboard"
    assert link.is_symlink() and link.resolve() == (ROOT / "app").resolve()
    mode = subprocess.run(["git", "ls-files", "-s", "aspo_dashboard"], cwd=ROOT, capture_output=True, text=True)
    assert mode.stdout.startswith("120000") or not mode.stdout, mode.stdout  # (untracked while uncommitted)
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]; "
            f"sys.path[:] = [p for p in sys.path if p not in ('', {str(ROOT)!r})] + [{str(ROOT / 'notebooks')!r}]; "
            "import _paths, aspo_dashboard.data, aspo_charts, aspo_report.cli; "
            "print(aspo_dashboard.__file__, aspo_charts.__file__, aspo_report.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    files = [Path(f).resolve() for f in done.stdout.split()]
    assert files == [(ROOT / d / "__init__.py").resolve() for d in ("app", "aspo_charts", "aspo_report")]


def test_no_test_module_is_imported_by_another():
    """Shared helpers live in helper modules (tests/*_helpers.py): a test module is no library (editing one test
    file must not break another, and under pytest's importlib import mode test modules cannot import each other)."""
    found = {}
    for path in (ROOT / "tests").glob("*.py"):
        names = set().union(*(_modules(n) for n in ast.walk(ast.parse(path.read_text()))))
        if {m for m in names if m.split(".")[0].startswith("test_")}:
            found[path.name] = sorted(names)
    assert found == {}
