"""The query engine under `queries` and `queries_explain`: one listing of the log tree per query, the
catalog's verified files as table sources, DuckDB SQL with bound parameters -> pandas DataFrame.

Safety: user values (run ids, filters, limits) are always bound parameters; the only text spliced
into SQL are the callers' constant fragments and table-source expressions whose file lists are
themselves bound parameters. DuckDB expands glob characters inside a path even when it is bound, so
every path is escaped (`[*]`, `[?]`, `[[]`; the catalog refuses such names below the root anyway).
Each call uses its own cursor on a shared in-memory database (DuckDB cursors are independent
connections, safe across Streamlit's threads) and consumes its result fully before closing it.

A run is a directory: every source replaces the run_id column by the name of the directory the file
was listed in (catalog.run_keys), so rows can never merge into another run, whatever their run_id says.
"""
from __future__ import annotations

import os
import re
import threading
from typing import Callable

import duckdb
import pandas as pd

from . import catalog
from .tables import FILE_SCHEMAS

_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None
_DB_LOCK = threading.Lock()
_BUGS = (duckdb.BinderException, duckdb.ParserException, duckdb.CatalogException)
DEDUP = "QUALIFY row_number() OVER (PARTITION BY run_id, step ORDER BY rank) = 1"
# A token_hist cell's rows whose new_logp was measured after the step's updates: v4 cells count them (a plug-in's
# token budget measures the kept responses); v1-v3 cells carry the after-update sums only when every row was.
AFTER_ROWS = "coalesce(after_count, CASE WHEN delta_logp_sum IS NOT NULL THEN count END)"


def cursor() -> duckdb.DuckDBPyConnection:
    global _DB
    with _DB_LOCK:
        if _DB is None or _DB[0] != os.getpid():  # a forked child must not reuse the parent's DB
            con = duckdb.connect(":memory:")
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            _DB = (os.getpid(), con)
        return _DB[1].cursor()


def duck_path(path: str) -> str:
    """`path` as DuckDB must be given it to read that one file: glob characters bracketed."""
    return re.sub(r"[*?\[]", lambda m: f"[{m[0]}]", path)


def source(name: str, parts: list, keys: dict) -> tuple[str, dict]:
    """SQL for one table source and its bound parameters. The files go in as one bound list, each read
    once, and every row's run_id is replaced by the name of the run directory its file was listed in
    (keys), joined on the file's path (one read_parquet, not a union per run: 68 runs cost 68 ms, not
    418); no files -> a typed empty table; files with other columns (older versions, outside writers) are
    aligned by name to the schema."""
    if not parts:
        return f"_empty_{name}", {}
    paths = list(dict.fromkeys(p.path for p in parts))  # a file linked into two runs is read once, for each
    canonical = all(p.canonical for p in parts)
    opts = "" if canonical else ", union_by_name = true"
    read = (f"SELECT t.* EXCLUDE (_aspo_file) REPLACE (m._aspo_run AS run_id) "
            f"FROM read_parquet(${name}_files, filename = '_aspo_file'{opts}) t "
            f"JOIN (SELECT unnest(${name}_paths) AS _aspo_file, unnest(${name}_runs) AS _aspo_run) m USING (_aspo_file)")
    params = {f"{name}_files": [duck_path(x) for x in paths], f"{name}_paths": [p.path for p in parts],
              f"{name}_runs": [keys[p.run_dir] for p in parts]}
    return f"({read if canonical else f'SELECT * FROM _empty_{name} UNION ALL BY NAME {read}'})", params


def run_sql(sql: str, select: Callable[[int], tuple[dict, dict]], params: dict | None = None) -> pd.DataFrame:
    """Execute `sql` whose {table} placeholders become sources from `select(attempt)` -> (table ->
    parts, run directory -> name). When DuckDB fails on the data, a file that vanished (resume,
    re-logged step) is forgotten by listing again, a file that cannot be read (corrupt data page, text
    that is not UTF-8) is reported and skipped, and the query retried."""
    for attempt in range(4):
        sources, keys = select(attempt)
        built = {n: source(n, ps, keys) for n, ps in sources.items()}
        text = sql.format(**{n: b[0] for n, b in built.items()})
        bound = {**(params or {}), **{k: v for n, b in built.items() if "{" + n + "}" in sql for k, v in b[1].items()}}
        con = cursor()
        try:
            for n in sources:
                con.register(f"_empty_{n}", FILE_SCHEMAS[n].empty_table())
            return con.execute(text, bound).df()
        except _BUGS:
            raise
        except duckdb.Error as e:
            if not _blame_files(sources, str(e)):
                raise
        finally:
            con.close()
    raise RuntimeError(f"logs under changed too often to query: {sql[:60]}")


def _blame_files(sources: dict, message: str) -> bool:
    """After a data error: True when a file vanished or a file to blame was marked bad (those
    named in DuckDB's message, else any that pyarrow cannot read either)."""
    parts = [p for ps in sources.values() for p in ps]
    if any(not os.path.exists(p.path) for p in parts):
        return True
    blamed = [p for p in parts if p.path in message or duck_path(p.path) in message] or \
        [p for p in parts if not catalog.readable(p.path)]
    for p in blamed:
        catalog.mark_bad(p.path, f"unreadable while querying: {message.splitlines()[0][:300]}")
    return bool(blamed)


def ids(run_ids) -> list[str] | None:
    return None if run_ids is None else [run_ids] if isinstance(run_ids, str) else [str(r) for r in run_ids]


def where(run_ids=None, step_min=None, step_max=None, extra=()) -> tuple[str, dict]:
    """A WHERE clause of constant fragments and the parameters they bind."""
    frags, params = ["TRUE", *extra], {}  # TRUE: callers may append "AND ..."
    if run_ids is not None:
        frags.append("list_contains($run_ids, run_id)")
        params["run_ids"] = run_ids
    if step_min is not None:
        frags.append("step >= $step_min")
        params["step_min"] = int(step_min)
    if step_max is not None:
        frags.append("step <= $step_max")
        params["step_max"] = int(step_max)
    return "WHERE " + " AND ".join(frags), params


def query(sql: str, tables: tuple, root, run_ids=None, step_min=None, step_max=None,
          extra=(), params=None) -> pd.DataFrame:
    """Common path: one listing of root (or the caller's), files pruned by run/step, the matching
    WHERE added, run. A retry (a file vanished) lists the tree again."""
    run_ids = ids(run_ids)
    clause, p = where(run_ids, step_min, step_max, extra)

    tree = catalog.listing(root)

    def select(attempt: int):
        if attempt:
            catalog.relist(tree)
        return {t: catalog.select(tree, t, run_ids, step_min, step_max) for t in tables}, catalog.run_keys(tree)
    return run_sql(sql.replace("{where}", clause), select, {**p, **(params or {})})


def sign(col: str) -> str:
    return f"CASE WHEN {col} > 0 THEN 'pos' WHEN {col} < 0 THEN 'neg' ELSE 'zero' END"
