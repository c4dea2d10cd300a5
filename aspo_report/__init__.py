"""aspo_report: the static paper-claims report of an experiment (`aspo report`, `python -m aspo_report`).

Reads runs through logs_schema.queries, draws with aspo_charts, imports neither Streamlit nor torch nor the
dashboard. Modules, in the order the report is made: collect (the runs, grouped by task, model, algo, seed),
numbers (per run, then over seeds), stats (bootstrap intervals, seeds needed), claims (the paper's claims and
the fixed verdict rule), figures, document (blocks, summary.json, writing the files), render (Markdown, HTML,
the README's claims table), cli (the one parser of `aspo report`).
"""
