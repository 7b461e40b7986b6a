"""Robustness reports: rich tables in the terminal, ``report.md`` and a PNG plot.

All functions take metrics documents (the ``metrics.json`` contents), so a report can be
rebuilt from files written by earlier runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from service.model.metrics import GATE_ATTACK, MetricsError, robust_accuracy

DISPLAY = {
    "none": "standard",
    "pgd": "PGD-AT (Madry)",
    "trades": "TRADES",
    "distill": "distillation",
}
TARGET_STANDARD_CLEAN = 0.97
TARGET_ROBUST_CLEAN = 0.95
TARGET_ROBUST_EPS = 0.1
TARGET_ROBUST_ACC = 0.80
ANCHORS = (
    "Published anchors (MNIST 28x28, eps = 0.3, strong PGD): Madry et al. 2018 adversarial "
    "training ≈ 89% robust accuracy; TRADES (Zhang et al. 2019) ≈ 96%. The 8x8 digits here "
    "are a different and harder regime: 64 pixels with 17 grey levels, so eps = 0.3 moves "
    "every pixel by about 5 of 16 levels and can redraw a digit; do not compare eps = 0.2/0.3 "
    "numbers here with MNIST numbers at the same eps."
)


def _defense(metrics: dict[str, Any]) -> str:
    return str(metrics["model"]["defense"])


def _epsilons(metrics_list: Sequence[dict[str, Any]]) -> list[float]:
    eps = {float(r["epsilon"]) for m in metrics_list for r in m["evaluation"]["robust"]}
    return sorted(eps)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _gate_entry(metrics_list: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    if not metrics_list:
        return None
    robust = metrics_list[0]["evaluation"]["robust"]
    return next((r for r in robust if r["attack"] == GATE_ATTACK), None)


def _settings_title(metrics_list: Sequence[dict[str, Any]]) -> str:
    gate = _gate_entry(metrics_list)
    if gate is None:
        return f"no {GATE_ATTACK} entry"
    return f"worst of PGD-{gate['steps']}×{gate['restarts']} and AutoAttack"


def _find(metrics_list: Sequence[dict[str, Any]], defense: str) -> dict[str, Any] | None:
    return next((m for m in metrics_list if _defense(m) == defense), None)


def robustness_table(
    metrics_list: Sequence[dict[str, Any]],
    *,
    baseline: str | None = None,
    show_time: bool = True,
) -> Table:
    """Clean and robust accuracy (``worst-case``: PGD and AutoAttack) per model and epsilon.

    Args:
        metrics_list: Metrics documents, one per model.
        baseline: Defense whose numbers the others are divided by (e.g. ``"none"``).
        show_time: Add the training-seconds column.

    Returns:
        A rich table.
    """
    base = _find(metrics_list, baseline) if baseline else None
    eps_list = _epsilons(metrics_list)
    datasets = {str(m["evaluation"].get("dataset", "")) for m in metrics_list}
    split = "the digits test split"
    if len(datasets) == 1 and (only := datasets.pop()) and not only.startswith("sklearn-digits"):
        split = only
    table = Table(title=f"Robust accuracy on {split} ({_settings_title(metrics_list)}, L-inf)")
    table.add_column("model")
    table.add_column("clean", justify="right")
    for eps in eps_list:
        table.add_column(f"ε={eps:g}", justify="right")
    if show_time:
        table.add_column("train s", justify="right")
    for m in metrics_list:
        ev = m["evaluation"]
        cells = [DISPLAY.get(_defense(m), _defense(m)), _pct(ev["clean_accuracy"])]
        for eps in eps_list:
            acc = robust_accuracy(ev, attack=GATE_ATTACK, epsilon=eps)
            cell = _pct(acc)
            if base is not None and base is not m and acc is not None:
                ref = robust_accuracy(base["evaluation"], attack=GATE_ATTACK, epsilon=eps)
                cell += f" (×{acc / ref:.2f})" if ref else " (×∞)" if acc else " (×-)"
            cells.append(cell)
        if show_time:
            cells.append(f"{float(m['training_seconds']):.1f}")
        table.add_row(*cells)
    return table


def attack_table(metrics_list: Sequence[dict[str, Any]]) -> Table:
    """Accuracy per attack (FGSM, PGD on cross-entropy and on the CW logit margin, AutoAttack)."""
    eps_list = _epsilons(metrics_list)
    table = Table(title="Accuracy per attack: FGSM / PGD-CE / PGD-CW (logit margin) / AutoAttack")
    table.add_column("model")
    for eps in eps_list:
        table.add_column(f"ε={eps:g}", justify="right")
    for m in metrics_list:
        ev = m["evaluation"]
        cells = [DISPLAY.get(_defense(m), _defense(m))]
        for eps in eps_list:
            parts = [
                _pct(robust_accuracy(ev, attack=a, epsilon=eps))
                for a in ("fgsm", "pgd-ce", "pgd-cw", "autoattack")
            ]
            cells.append(" / ".join(parts))
        table.add_row(*cells)
    return table


def findings(metrics_list: Sequence[dict[str, Any]]) -> list[str]:
    """Return the report's conclusions: target checks and the distillation verdict."""
    lines: list[str] = []
    std = _find(metrics_list, "none")
    if std is not None:
        clean = std["evaluation"]["clean_accuracy"]
        verdict = "meets" if clean >= TARGET_STANDARD_CLEAN else "MISSES"
        lines.append(f"standard model: clean {_pct(clean)} {verdict} the ≥ 97% target.")
    for defense in ("pgd", "trades"):
        m = _find(metrics_list, defense)
        if m is None:
            continue
        clean = m["evaluation"]["clean_accuracy"]
        rob = robust_accuracy(m["evaluation"], attack=GATE_ATTACK, epsilon=TARGET_ROBUST_EPS)
        ok = clean >= TARGET_ROBUST_CLEAN and rob is not None and rob >= TARGET_ROBUST_ACC
        lines.append(
            f"{DISPLAY[defense]}: clean {_pct(clean)}, robust {_pct(rob)} at ε=0.1 — "
            f"{'meets' if ok else 'MISSES'} the ≥ 95% clean / ≥ 80% robust target."
        )
    dist = _find(metrics_list, "distill")
    if dist is not None:
        ev = dist["evaluation"]
        eps = max(_epsilons([dist]))
        ce = robust_accuracy(ev, attack="pgd-ce", epsilon=eps)
        cw = robust_accuracy(ev, attack="pgd-cw", epsilon=eps)
        verdict = (
            "its apparent robustness collapses under the logit-margin attack: gradient "
            "masking, not robustness (Carlini and Wagner 2017)"
            if ce is not None and cw is not None and cw < ce - 0.1
            else "the logit-margin attack does not find a large gap here"
        )
        lines.append(
            f"defensive distillation at ε={eps:g}: {_pct(ce)} under PGD on cross-entropy but "
            f"{_pct(cw)} under PGD on the CW logit margin — {verdict}. Its robust column "
            "uses the worst case of every attack."
        )
    return lines


def _md_table(table: Table) -> str:
    headers = [str(c.header) for c in table.columns]
    rows = list(zip(*[list(c.cells) for c in table.columns], strict=True))
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(out)


def markdown_report(metrics_list: Sequence[dict[str, Any]], *, plot_name: str | None = None) -> str:
    """Render the report as Markdown (tables, attack settings, findings, anchors)."""
    if not metrics_list:
        raise MetricsError("no metrics to report on")
    gate = _gate_entry(metrics_list)
    settings = (
        f"the worst case per example of PGD with {gate['steps']} steps (step 2.5·ε/steps) "
        f"and {gate['restarts']} random restarts, on cross-entropy and on the Carlini-Wagner "
        "logit margin (worst over restarts and iterates), and of torchattacks' standard "
        "AutoAttack (APGD-CE, APGD-T, FAB-T: 100 iterations each; Square: 5000 queries)"
        if gate
        else f"no {GATE_ATTACK} entry (the evaluation ran without AutoAttack)"
    )
    parts = [
        "# ztml digits robustness report",
        "",
        f"Test split: {metrics_list[0]['evaluation']['dataset']}. Robust accuracy: {settings}. "
        "An example counts as robust only if it is classified correctly and no attack "
        "changes its prediction.",
        "",
        "## Clean and robust accuracy (ratio against the standard model)",
        "",
        _md_table(robustness_table(metrics_list, baseline="none")),
        "",
        "## Per attack",
        "",
        _md_table(attack_table(metrics_list)),
        "",
        "## Findings",
        "",
        *[f"- {line}" for line in findings(metrics_list)],
        "",
        "## Anchors",
        "",
        ANCHORS,
        "",
    ]
    if plot_name:
        parts += [f"![robust accuracy against ε]({plot_name})", ""]
    return "\n".join(parts)


def plot_robustness(metrics_list: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Plot robust accuracy against epsilon, one line per model, to a PNG (Agg backend).

    Distillation also gets a dashed line for PGD on cross-entropy alone, to show the
    robustness that gradient masking fakes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in metrics_list:
        ev = m["evaluation"]
        eps = [0.0, *_epsilons([m])]
        name = DISPLAY.get(_defense(m), _defense(m))
        acc = [
            ev["clean_accuracy"],
            *[robust_accuracy(ev, attack=GATE_ATTACK, epsilon=e) for e in eps[1:]],
        ]
        (line,) = ax.plot(eps, acc, marker="o", label=name)
        if _defense(m) == "distill":
            masked = [
                ev["clean_accuracy"],
                *[robust_accuracy(ev, attack="pgd-ce", epsilon=e) for e in eps[1:]],
            ]
            ax.plot(
                eps,
                masked,
                linestyle="--",
                color=line.get_color(),
                label=f"{name} (PGD-CE only: masked)",
            )
    ax.set_xlabel("ε (L-inf)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"Robust accuracy on 8x8 digits ({_settings_title(metrics_list)})")
    ax.legend(fontsize=8)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def write_report(metrics_list: Sequence[dict[str, Any]], out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``report.md`` and ``robustness.png`` into a directory.

    Returns:
        The paths of the Markdown file and the PNG.
    """
    directory = Path(out_dir)
    png = plot_robustness(metrics_list, directory / "robustness.png")
    md = directory / "report.md"
    md.write_text(markdown_report(metrics_list, plot_name=png.name))
    return md, png
