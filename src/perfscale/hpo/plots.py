"""The study's plots through Optuna's plotly visualisation, in one self-contained HTML file (plotly.js
inlined once, ~5 MB; nothing is fetched when it is opened): optimisation history, parameter
importances, parallel coordinates, intermediate values (single objective) or the Pareto front
(multi-objective). A plot Optuna cannot draw yet (e.g. importances with fewer than two finished
trials) is replaced by a line saying why.
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path

from perfscale.errors import StoreError


def _figures(study, multi: bool):
    import optuna.visualization as vis

    def loss(t):
        return t.values[0]

    if multi:
        return [
            ("optimisation history (eval loss)", lambda: vis.plot_optimization_history(study, target=loss, target_name="eval loss")),
            ("Pareto front (eval loss, tokens/s)", lambda: vis.plot_pareto_front(study, target_names=["eval loss", "tokens/s"])),
            ("parameter importances (eval loss)", lambda: vis.plot_param_importances(study, target=loss, target_name="eval loss")),
            ("parallel coordinates (eval loss)", lambda: vis.plot_parallel_coordinate(study, target=loss, target_name="eval loss")),
        ]
    return [
        ("optimisation history", lambda: vis.plot_optimization_history(study)),
        ("parameter importances", lambda: vis.plot_param_importances(study)),
        ("parallel coordinates", lambda: vis.plot_parallel_coordinate(study)),
        ("intermediate values (what the pruner saw)", lambda: vis.plot_intermediate_values(study)),
    ]


def write_plots(study, path: str | Path, multi: bool = False) -> tuple[str, list[str]]:
    """Write the HTML file; returns (its path, the plots that could not be drawn and why)."""
    path = Path(path)
    parts, skipped = [], []
    first = True
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials" and the like: said as notes instead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for title, make in _figures(study, multi):
            try:
                fig = make()
            except Exception as exc:  # noqa: BLE001 - optuna raises ValueError/RuntimeError for too few trials
                skipped.append(f"{title}: {exc}")
                parts.append(f"<h2>{html.escape(title)}</h2><p>not drawn: {html.escape(str(exc))}</p>")
                continue
            if not fig.data:
                skipped.append(f"{title}: no finished trials to draw")
            parts.append(f"<h2>{html.escape(title)}</h2>" + fig.to_html(full_html=False, include_plotlyjs=first))
            first = False
    optuna.logging.set_verbosity(level)
    doc = ("<!doctype html><html><head><meta charset='utf-8'><title>perfscale hpo: "
           f"{html.escape(study.study_name)}</title></head><body><h1>Study {html.escape(study.study_name)}</h1>"
           + "".join(parts) + "</body></html>")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"Cannot write the plots to {str(path)!r}: {exc}. Give a writable --out folder.") from exc
    return str(path), skipped


__all__ = ["write_plots"]
