"""Authorization decision latency: `opa bench` over the authz example inputs.

For every example input in policies/examples/authz this runs
``opa bench --format json`` on ``data.ztml.authz.decision`` and, in the same run and
the same way, a trivial baseline query (``is_object(input)``) on the same input, and
reports the evaluation-time p50 and p99 (OPA's ``timer_rego_query_eval_ns``
histogram) beside the baseline with the ratio. Target: decision p50 < 100 µs.

OPA runs as ztml deploys it: Go runtime settings from ``service.toolchain.opa.OPA_SERVER_ENV``
(one scheduler thread, ``GOGC=400``, ``GOMEMLIMIT``) and its store optimized for reads
(``--optimize-store-for-read-speed``). The summary also shows, from the same run, every
query again with OPA's defaults (Go's thread count and collector, the plain store), so
the settings' share is visible, and the medians of the allowed and the denied examples
apart (a denial evaluates every reason rule, since it lists every reason).

    .venv/bin/python -m benchmarks.opa_bench            # every authz example
    .venv/bin/python -m benchmarks.opa_bench --quick    # three examples
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from service.stack.runner import opa_env
from service.toolchain.opa import OPA_STORE_FLAG, OPA_VERSION, find_opa
from service.toolchain.paths import POLICIES_DIR

DECISION_QUERY = "data.ztml.authz.decision"
BASELINE_QUERY = "is_object(input)"
TARGET_P50_US = 100.0
QUICK_EXAMPLES = ("allow-predict", "deny-cross-tenant", "deny-missing-fields")
LOAD_IGNORES = ("examples", "config", ".*", "*_test.rego")


@dataclass(frozen=True)
class Timing:
    """Evaluation time percentiles of one benchmarked query, in microseconds."""

    p50_us: float
    p99_us: float
    iterations: int


def bench(opa: Path, query: str, input_path: Path, *, count: int, deployed: bool = True) -> Timing:
    """Run `opa bench` for query on input_path and return its eval-time percentiles.

    With ``deployed`` OPA gets the environment and the store ztml runs it with (Go
    settings of ``opa_env``, store optimized for reads); otherwise OPA's defaults: this
    process's environment without those Go settings, and the plain store.
    """
    command = [
        str(opa),
        "bench",
        "--format",
        "json",
        "--count",
        str(count),
        "-d",
        str(POLICIES_DIR),
    ]
    if deployed:
        command.append(OPA_STORE_FLAG)
    for pattern in LOAD_IGNORES:
        command += ["--ignore", pattern]
    command += ["-i", str(input_path), query]
    env = {k: v for k, v in os.environ.items() if k not in opa_env({})}
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=opa_env(env) if deployed else env,
    )
    if result.returncode != 0:
        raise SystemExit(f"opa bench failed for {input_path}:\n{result.stderr or result.stdout}")
    # With --count > 1 OPA prints one JSON document per run.
    decoder = json.JSONDecoder()
    text, position, runs = result.stdout, 0, []
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(text, position)
        runs.append(document)
    prefix = "histogram_timer_rego_query_eval_ns_"
    p50 = statistics.median(run["Extra"][prefix + "median"] for run in runs) / 1000
    p99 = max(run["Extra"][prefix + "99%"] for run in runs) / 1000
    return Timing(p50_us=p50, p99_us=p99, iterations=sum(run["N"] for run in runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="benchmark three examples only")
    parser.add_argument("--count", type=int, default=1, help="opa bench runs per query")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    opa = find_opa()
    inputs = sorted((POLICIES_DIR / "examples" / "authz").glob("*/input.json"))
    if args.quick:
        inputs = [p for p in inputs if p.parent.name in QUICK_EXAMPLES]
    console = Console(width=max(Console().width, 110))
    rows = []
    default_rows: list[tuple[Timing, Timing]] = []
    with console.status("running opa bench…") as status:
        for input_path in inputs:
            name = input_path.parent.name
            status.update(f"opa bench {name}")
            decision = bench(opa, DECISION_QUERY, input_path, count=args.count)
            baseline = bench(opa, BASELINE_QUERY, input_path, count=args.count)
            rows.append((name, decision, baseline))
            status.update(f"opa bench {name} (OPA's defaults)")
            default_rows.append(
                (
                    bench(opa, DECISION_QUERY, input_path, count=args.count, deployed=False),
                    bench(opa, BASELINE_QUERY, input_path, count=args.count, deployed=False),
                )
            )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = Table(
        title=f"ztml authz decision eval time (opa bench, OPA {OPA_VERSION} as deployed: "
        f"{' '.join(f'{k}={v}' for k, v in opa_env({}).items())}, {OPA_STORE_FLAG}; "
        f"load avg {load:.1f} on {os.cpu_count()} CPUs)"
    )
    for column in (
        "example",
        "p50 µs",
        "p99 µs",
        "baseline p50 µs",
        "baseline p99 µs",
        "p50 ratio",
    ):
        table.add_column(column, justify="left" if column == "example" else "right")
    for name, decision, baseline in rows:
        table.add_row(
            name,
            f"{decision.p50_us:.1f}",
            f"{decision.p99_us:.1f}",
            f"{baseline.p50_us:.1f}",
            f"{baseline.p99_us:.1f}",
            f"{decision.p50_us / baseline.p50_us:.1f}×",
        )
    overall_p50 = statistics.median(d.p50_us for _, d, _ in rows)
    overall_p99 = max(d.p99_us for _, d, _ in rows)
    base_p50 = statistics.median(b.p50_us for _, _, b in rows)
    base_p99 = max(b.p99_us for _, _, b in rows)
    table.add_section()
    for kind in ("allow", "deny"):
        kept = [(d, b) for name, d, b in rows if name.startswith(kind + "-")]
        if kept:
            kind_p50 = statistics.median(d.p50_us for d, _ in kept)
            kind_base = statistics.median(b.p50_us for _, b in kept)
            table.add_row(
                f"{kind}-* ({len(kept)}: median p50, max p99)",
                f"{kind_p50:.1f}",
                f"{max(d.p99_us for d, _ in kept):.1f}",
                f"{kind_base:.1f}",
                f"{max(b.p99_us for _, b in kept):.1f}",
                f"{kind_p50 / kind_base:.1f}×",
            )
    table.add_row(
        "all (median p50, max p99)",
        f"{overall_p50:.1f}",
        f"{overall_p99:.1f}",
        f"{base_p50:.1f}",
        f"{base_p99:.1f}",
        f"{overall_p50 / base_p50:.1f}×",
    )
    default_p50 = statistics.median(d.p50_us for d, _ in default_rows)
    default_base = statistics.median(b.p50_us for _, b in default_rows)
    table.add_row(
        "all, OPA's defaults",
        f"{default_p50:.1f}",
        f"{max(d.p99_us for d, _ in default_rows):.1f}",
        f"{default_base:.1f}",
        f"{max(b.p99_us for _, b in default_rows):.1f}",
        f"{default_p50 / default_base:.1f}×",
    )
    console.print(table)
    met = overall_p50 < TARGET_P50_US
    verdict = "[green]met[/green]" if met else "[red]missed[/red]"
    console.print(f"target p50 < {TARGET_P50_US:.0f} µs: {verdict} ({overall_p50:.1f} µs)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures: dict[str, dict[str, object]] = {
            name: {"decision": vars(decision), "baseline": vars(baseline)}
            for name, decision, baseline in rows
        }
        figures["all"] = {
            "decision": {"p50_us": overall_p50, "p99_us": overall_p99},
            "baseline": {"p50_us": base_p50, "p99_us": base_p99},
            "load_average": load,
        }
        figures["all_opa_defaults"] = {
            "decision": {"p50_us": default_p50},
            "baseline": {"p50_us": default_base},
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
