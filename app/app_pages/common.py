"""What every page needs before it draws: the log directory and its runs (or a clear message and a
stop), the skipped-file report, the live-mode wrapper and the live step counter."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd
import streamlit as st

import aspo_charts as charts
from aspo_dashboard import data

# Plain Unicode symbols (emoji fonts are often missing on Linux browsers).
STATUS_ICONS = {"running": "●", "finished": "✓", "failed": "✗", "killed": "■", "stale": "⚠", "unknown": "?"}
# Every ASCII punctuation character may be backslash-escaped in CommonMark; these are the ones Markdown,
# Streamlit's extensions (:red[..], $math$, ~strike~) or HTML would otherwise act on.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:=&])")


def md(text) -> str:
    """User or model text (a prompt, a run id, a path) shown literally inside st.markdown / caption / info /
    subheader: a leading backtick, `*`, `#`, `[` or `<` must not turn into code, emphasis, a heading or a link."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


class Context(NamedTuple):
    root: str
    runs: pd.DataFrame        # queries.list_runs
    selected: list[str]       # runs to compare (sidebar)
    focus: str                # run to inspect (sidebar)
    groups: dict = {}         # run_id -> group label when the sidebar groups runs (else {})
    band: str = "std"         # std | bootstrap: the band drawn around a group's mean


def show_problems(root: str) -> None:
    probs = data.problems(root)
    pending = data.token_check_pending(root)
    if pending:
        st.caption(f"Verifying the page checksums of {pending} token file(s) in the background: damaged ones "
                   "will be listed here. Token views check the files they read before reading them.")
    if probs.empty:
        return
    kind = probs["kind"]  # file | directory | gap | hint (queries.problems)
    files, dirs, gaps = (int(kind.eq(k).sum()) for k in ("file", "directory", "gap"))
    if files or dirs:
        what = " and ".join(x for x in (f"{files} log file(s)" * bool(files), f"{dirs} directory(ies)" * bool(dirs))
                            if x)
        st.warning(f"{what} were skipped (unreadable, corrupt, truncated, newer schema, not a regular file, a link "
                   "out of the log directory, another rank's or run's copy, ...): the views below leave them out; "
                   "the list below says why.")
    if gaps:
        st.warning(f"{gaps} gap(s) in the runs' steps (lost, unreadable or never written): the curves "
                   "skip them; the Runs page lists them per run.")
    for hint in probs.loc[kind.eq("hint"), "reason"].head(3):
        st.info(hint)
    with st.expander("Skipped files and gaps"):
        st.dataframe(probs, hide_index=True, width="stretch")


def show_warmup(root: str) -> None:
    """The start model's supervised warm-up (aspo demo writes its progress), until a run has a step."""
    for w in data.warmup_progress(root).itertuples(index=False):
        acc = "not checked yet" if pd.isna(w.accuracy) else f"{w.accuracy:.2f}"
        target = "" if pd.isna(w.target_accuracy) else f" (RL starts at {w.target_accuracy:.2f} or at the step budget)"
        if w.state == "running":
            st.info(f"**Warming up the start model** (supervised, before RL): step {w.step} of at most "
                    f"{w.max_steps} · loss {w.loss:.3f} · held-out accuracy {acc}{target} · {w.seconds:.0f} s")
            st.progress(min(int(w.step or 0) / max(int(w.max_steps or 1), 1), 1.0))
        elif w.state == "done":
            how = "loaded from the cache" if w.cached else f"{w.seconds:.0f} s"
            st.success(f"Start model warmed up: {w.step} steps, held-out accuracy {acc} ({how}). The RL runs "
                       "start now; their curves appear with their first step.")
        else:
            st.warning(f"The warm-up stopped at step {w.step} (its process is gone): run `aspo demo` again.")


def context(title: str) -> Context:
    """Page title, then the runs; stops the page with an explanation when there is nothing to draw."""
    st.title(title)
    root = data.logs_root()
    if not Path(root).is_dir():
        st.warning(f"Log directory {md(root)} does not exist. Start a run in it with `aspo train --out DIR/<run>` "
                   "or open the dashboard on another directory: `aspo dashboard --logs DIR`.")
        st.stop()
    show_problems(root)
    runs = data.list_runs(root)
    if runs.empty or not runs["n_steps"].fillna(0).gt(0).any():
        show_warmup(root)
    if runs.empty:
        st.info(f"No runs under {md(root)} yet. Runs appear here as soon as a trainer writes its first "
                "files (`aspo train --out DIR/<run>`).")
        st.stop()
    ids = list(runs["run_id"].astype(str))
    selected = [r for r in st.session_state.get("selected_runs", []) if r in ids] or ids[-4:]
    focus = st.session_state.get("focus_run")
    focus = focus if focus in ids else selected[-1]
    groups = data.run_groups(runs, selected, st.session_state.get("group_by") or [])
    return Context(root, runs, selected, focus, groups, st.session_state.get("band", "std"))


def runs_with_steps(ctx: Context, run_ids=None) -> list[str]:
    """The given (default: selected) runs that have at least one published step; says so otherwise."""
    run_ids = ctx.selected if run_ids is None else run_ids
    r = ctx.runs.set_index("run_id")
    ok = [x for x in run_ids if x in r.index and pd.notna(r.at[x, "n_steps"]) and r.at[x, "n_steps"] > 0]
    empty = [x for x in run_ids if x not in ok]
    if empty:
        st.info(f"No steps logged yet for: {', '.join(md(x) for x in empty)}.")
    return ok


def context_with_steps(title: str) -> tuple[Context, list[str]]:
    """context(title), then the selected runs that have steps; stops the page when none has."""
    ctx = context(title)
    run_ids = runs_with_steps(ctx)
    if not run_ids:
        st.stop()
    return ctx, run_ids


def run_config(ctx: Context, run_id: str) -> dict:
    """The run's recorded trainer config ({} when missing, unreadable, not an object, too large or too deep)."""
    rows = ctx.runs[ctx.runs["run_id"] == run_id]["config_json"]
    return (data.parse_config(rows.iloc[0]) if len(rows) else None) or {}


def is_running(ctx: Context, run_ids=None) -> bool:
    run_ids = ctx.selected if run_ids is None else run_ids
    return bool(ctx.runs[ctx.runs["run_id"].isin(run_ids)]["status"].eq("running").any())


COUNTER_RUNS = 6  # the step counter names each run up to this many runs


def live_counter(root: str, run_ids) -> None:
    """The latest step and status of each run: the live view's heartbeat (the app's watcher reruns
    the page when the log directory changes)."""
    runs = data.list_runs(root)
    runs = runs[runs["run_id"].isin(run_ids)]
    many = len(runs) > COUNTER_RUNS  # then: a count per status, and only the running runs by name
    listed = runs[runs["status"].eq("running")] if many else runs
    parts = [f"{STATUS_ICONS.get(s, '')} **{md(r)}**: {0 if pd.isna(n) else int(n)} steps logged"
             + ("" if pd.isna(last) else f" (last step {int(last)})")
             for r, s, n, last in listed[["run_id", "status", "n_steps", "last_step"]].itertuples(index=False)]
    if many:
        counts = runs["status"].value_counts()
        parts.insert(0, f"{len(runs)} runs: " + ", ".join(f"{n} {STATUS_ICONS.get(k, '')} {k}" for k, n in counts.items())
                     + f"; {int(runs['n_steps'].sum())} steps logged")
    live = runs["status"].eq("running").any()
    st.caption(("● live, refreshing every %.1f s — " % data.LIVE_EVERY_S if live else "") + " · ".join(parts))


def live(body: Callable[[], None], ctx: Context, run_ids=None) -> None:
    """The runs' step counter, then `body` (which reads its data through app.data). Every page is
    live: the app's watcher (streamlit_app.watch) reruns it when the log directory changes."""
    live_counter(ctx.root, ctx.selected if run_ids is None else run_ids)
    body()


def step_window(label: str, last: int, key: str) -> tuple[int, int]:
    """A step-range slider over 0..last that follows new steps: a range that ended on the last step
    keeps ending on it when the run grows (Streamlit would reset a slider whose bounds changed)."""
    top = max(int(last), 1)
    lo, hi = st.session_state.get(key) or (0, top)
    if hi >= st.session_state.get(f"_last:{key}", top):
        hi = top
    st.session_state[f"_last:{key}"] = top
    st.session_state[key] = (min(lo, top), min(hi, top))
    return st.slider(label, 0, top, key=key)


def pref(widget: Callable, label: str, name: str, default, page: str, **kwargs):
    """A widget whose value is a preference shared by pages (e.g. the collapse threshold): stored
    under `pref:<name>`, so it survives page switches (Streamlit drops the state of widgets that a
    run does not draw)."""
    key, wkey = f"pref:{name}", f"widget:{page}:{name}"
    st.session_state.setdefault(key, default)
    if wkey not in st.session_state:
        st.session_state[wkey] = st.session_state[key]
    value = widget(label, key=wkey, **kwargs)
    st.session_state[key] = value
    return value


def nonfinite_warning(df: pd.DataFrame, columns, what: str) -> None:
    """Say how many NaN / ±inf values `df` holds: a chart leaves them out (or hatches them) silently."""
    text = charts.nonfinite_text(df, columns)
    if text:
        st.warning(f"Non-finite values in the {what} (not drawn as numbers): {text}.")


def nonfinite_metrics_warning(root: str, run_ids) -> None:
    """Count the NaN / ±inf step metrics of the runs: plotly leaves them out of a curve without a word.
    Up to 3 runs: named with their counts; more: counts per metric, the per-run table in an expander."""
    nf = data.nonfinite_metrics(root, list(run_ids))
    if nf.empty:
        return
    names = {"nan": "NaN", "pos_inf": "+inf", "neg_inf": "-inf"}

    def counts(rows) -> str:
        return ", ".join(f"{int(rows[k].sum())} {v}" for k, v in names.items() if rows[k].sum())
    if nf["run_id"].nunique() <= 3:
        text = " · ".join(f"{md(run)}: " + "; ".join(f"{r.metric} " + counts(pd.DataFrame([r._asdict()]))
                                                    for r in g.itertuples(index=False))
                          for run, g in nf.groupby("run_id", sort=True))
    else:
        text = f"in {nf['run_id'].nunique()} runs: " + "; ".join(
            f"{m} {counts(g)}" for m, g in nf.groupby("metric", sort=True))
    st.warning("Non-finite step metrics (left out of the curves): " + text + ".")
    if nf["run_id"].nunique() > 3:
        with st.expander("Non-finite step metrics per run"):
            st.dataframe(nf, hide_index=True, width="stretch")


def plot(fig, key: str | None = None, frame: pd.DataFrame | None = None) -> None:
    """Draw a figure; with `frame` (the numbers drawn), buttons that download them as CSV or Parquet.
    The files are made on click (deferred), so a rerun never pays for serialising them."""
    st.plotly_chart(fig, width="stretch", key=key, config={"displaylogo": False})
    if frame is None or not len(frame):
        return
    name = key or "chart"
    row = st.container(horizontal=True, gap="small")
    row.download_button("Chart data (CSV)", lambda: frame.to_csv(index=False), f"{name}.csv", "text/csv",
                        key=f"download_{name}", icon=":material/download:", type="tertiary", on_click="ignore")
    row.download_button("Parquet", lambda: frame.to_parquet(index=False), f"{name}.parquet",
                        "application/vnd.apache.parquet", key=f"download_pq_{name}", type="tertiary",
                        on_click="ignore")


BAND_NAMES = {"std": "± std", "bootstrap": "95% bootstrap CI"}


def curves(ctx: Context, df: pd.DataFrame, metrics, smoothing: float = 0.0, title: str = "",
           y_title: str | None = None, colors: dict | None = None):
    """(figure, its numbers) of step curves: one line per run, or, when the sidebar groups runs, the
    mean of each group with its band (queries.seed_bands over the per-run curves, smoothed first)."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    present = [m for m in metrics if m in df.columns]
    if not ctx.groups:
        return (charts.step_curves(df, metrics, smoothing, title=title, y_title=y_title, colors=colors),
                df[["run_id", "step", *present]])
    groups = {r: g for r, g in ctx.groups.items() if r in set(df["run_id"])}
    smooth = charts.smooth_runs(df, present, smoothing)
    agg = data.seed_bands(smooth, groups, present, band=ctx.band)
    return charts.band_curves(agg, title, y_title or "", x="step", band_name=BAND_NAMES[ctx.band]), agg


def plot_curves(ctx: Context, df: pd.DataFrame, metrics, key: str, smoothing: float = 0.0, title: str = "",
                y_title: str | None = None, colors: dict | None = None):
    """curves() drawn, with the download of its numbers; returns the figure (e.g. to add lines)."""
    fig, frame = curves(ctx, df, metrics, smoothing, title, y_title, colors)
    plot(fig, key=key, frame=frame)
    return fig


def inactive_warning(root: str, run_ids) -> None:
    """One line per run with steps whose ratios did nothing (queries.inactive_ratio_steps)."""
    flags = data.inactive_ratio_steps(root, list(run_ids))
    for run_id, g in flags.groupby("run_id", sort=True):
        if g["inactive"].any():
            st.warning(f"**{md(run_id)}**: {data.INACTIVE_MESSAGE} — {int(g['inactive'].sum())} of {len(g)} steps "
                       "have |ratio − 1| < 1e-3 on more than 99% of their token rows (one update per rollout batch).")


def open_sample(run_id: str, step: int, sample: int, rank: int = 0) -> None:
    """Jump to the Samples page showing one response of one step (filters reset so that it is listed)."""
    st.session_state.update({"focus_run": run_id, "samples_follow": False, "samples_step": int(step),
                             "samples_jump": (int(rank), int(sample)), "samples_sign": "all", "samples_reward": (0.0, 1.0),
                             "samples_clip": False})
    st.switch_page(str(Path(__file__).with_name("samples.py")))
