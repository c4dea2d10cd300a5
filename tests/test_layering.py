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


def lazy_imports(path: Path) -> set[str]:
    """Modules imported inside a function body of `path` (not at module level)."""
    found = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found |= {n.module for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) and n.module}
    return found


def test_app_never_imports_the_trainer():
    for path, names in imported_modules("app").items():
        if path == APP_EXCEPTION[0]:
            lazy = lazy_imports(ROOT / path)
            assert {m for m in lazy if m.split(".")[0] == "aspo"} == {APP_EXCEPTION[1]}, lazy
            top = ast.parse((ROOT / path).read_text()).body  # module level: no aspo at all
            assert not any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("aspo.") for n in top)
            names = names - {"aspo"}
        assert not names & {"torch", "aspo", "transformers"}, path


def test_trainer_never_imports_the_app():
    for path, names in imported_modules("aspo").items():
        assert not names & {"aspo_dashboard", "streamlit"}, path
