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


def test_app_never_imports_the_trainer():
    for path, names in imported_modules("app").items():
        assert not names & {"torch", "aspo", "transformers"}, path


def test_trainer_never_imports_the_app():
    for path, names in imported_modules("aspo").items():
        assert not names & {"aspo_dashboard", "streamlit"}, path
