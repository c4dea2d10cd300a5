"""Parameters that take turns in `make check`."""
from __future__ import annotations

import pytest


def in_turn(values, family: int, families: int) -> list:
    """`values` as pytest parameters of one of `families` test families that each repeat one check over the same
    kind of list (the dashboard's pages, the notebooks): `make test` runs every value, `make check` (no slow)
    only this family's share, a different share per family, so the edit-test loop still covers each value in
    some family at a fraction of the cost."""
    return [pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=() if i % families == family % families
                         else pytest.mark.slow) for i, v in enumerate(values)]
