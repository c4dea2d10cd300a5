"""Helpers for the dashboard's AppTest tests: open a page on a log directory, read its charts back from their
figure JSON, its messages and its widgets."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from params import in_turn

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")


def app_pages(app: str = APP) -> list[str]:
    """Every page of the dashboard's navigation, by the name open_page takes: the app_pages scripts the app
    registers (st.Page), read from the app itself so a new page is tested without a list to update."""
    found = re.findall(r"""st\.Page\(PAGES / ["'](\w+)\.py["']""", Path(app).read_text())
    assert len(found) >= 8, f"the dashboard's pages were not found in {app}: {found}"
    return sorted(set(found))


PAGES = app_pages()


def pages_in_turn(family: int, families: int) -> list:
    """PAGES taking turns in `make check` (params.in_turn): each every-page family renders its share of them."""
    return in_turn(PAGES, family, families)


def decode(obj):
    """Figure JSON -> plain Python: plotly 7 writes arrays as {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            if "shape" in obj:
                arr = arr.reshape([int(s) for s in str(obj["shape"]).split(",")])
            return arr
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def figures(at) -> list[dict]:
    return [decode(json.loads(el.proto.spec)) for el in at.get("plotly_chart")]


def title(fig) -> str:
    t = fig["layout"].get("title", {})
    return t.get("text", "") if isinstance(t, dict) else str(t)


def figure(at, text: str) -> dict:
    found = [f for f in figures(at) if text in title(f)]
    assert found, f"no chart titled like {text!r}: {[title(f) for f in figures(at)]}"
    return found[0]


def traces(fig, kind=None) -> dict:
    return {t.get("name"): t for t in fig["data"] if kind is None or t.get("type") == kind}


def open_page(root, page: str, monkeypatch, state=None) -> AppTest:
    monkeypatch.setenv("ASPO_LOGS", str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    if page != "runs":
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def response_picker(at):
    return next(s for s in at.selectbox if s.label.startswith("Response ("))


def messages(at) -> str:
    return " ".join(str(e.value) for kind in ("info", "warning", "error", "success") for e in getattr(at, kind))


def panels(fig) -> dict:
    """{metric: {trace name: trace}} of a stacked-panel figure (panel = y axis, titled by its metric)."""
    titles = {k.replace("axis", ""): v["title"]["text"] for k, v in fig["layout"].items() if k.startswith("yaxis")}
    out = {}
    for t in fig["data"]:
        if not t.get("name", "").endswith(" band"):
            out.setdefault(titles[t.get("yaxis", "y")], {})[t["name"]] = t
    return out
