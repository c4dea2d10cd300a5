"""`python -m aspo_report RUN_DIR... --out DIR`: what `aspo report` runs."""
from aspo_report.cli import main

raise SystemExit(main())
