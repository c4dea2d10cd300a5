"""The dependency direction of DESIGN.md: aspo -> logs_schema; app -> logs_schema; never the reverse."""
import ast
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
