"""aspo's log contract: versioned Parquet tables (schema), an atomic writer and DuckDB queries.

Imports neither torch nor streamlit. `from logs_schema import RunWriter, queries`.
"""
from .schema import SCHEMA_VERSION
from .writer import RunWriter

__all__ = ["SCHEMA_VERSION", "RunWriter"]
