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

Then the round trip the service pays per decision, through its own client
(``service.authz.OpaAuthorizer``, one keep-alive connection): two OPA servers with the same
policies and settings, one on a Unix domain socket (as ``ztml up`` and the pod run it), one
on loopback TCP with mutual TLS (the baseline), asked in alternating rounds of the same run.

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
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from service.stack.runner import opa_env
from service.toolchain.opa import OPA_STORE_FLAG, OPA_VERSION, find_opa
from service.toolchain.paths import POLICIES_DIR, PROJECT_ROOT

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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def round_trips(opa: Path, count: int) -> dict[str, list[float]]:
    """Time ``count`` decisions per transport through the service's client (µs each)."""
    import asyncio
    import tempfile

    from service.authn.tls import make_dev_ca
    from service.authz import OpaAuthorizer
    from service.authz.tls import OpaTls
    from service.stack.processes import free_port, start_process, stop_group, wait_ready
    from service.stack.runner import opa_command

    example = json.loads((POLICIES_DIR / "examples/authz/allow-predict/input.json").read_text())
    with tempfile.TemporaryDirectory(prefix="ztml-opa-bench-") as scratch:
        base = Path(scratch)
        certs = make_dev_ca(base / "tls")
        sock = base / "opa.sock"
        socket_port, tls_port = free_port(), free_port()
        servers = {
            "unix": opa_command(opa, socket_port, socket=sock),
            "tls": opa_command(opa, tls_port, certs=certs),
        }
        procs = {}
        try:
            for name, command in servers.items():
                log = base / f"opa-{name}.log"
                procs[name] = start_process(
                    command, log_path=log, env=opa_env(os.environ), cwd=PROJECT_ROOT
                )
            tls_context = OpaTls(certs.ca_cert, certs.client_cert, certs.client_key).context()
            wait_ready(
                f"http://127.0.0.1:{socket_port}/health",
                process=procs["unix"],
                what="OPA (socket)",
                log_path=base / "opa-unix.log",
                timeout=30,
            )
            wait_ready(
                f"https://127.0.0.1:{tls_port}/health",
                verify=tls_context,
                process=procs["tls"],
                what="OPA (TLS)",
                log_path=base / "opa-tls.log",
                timeout=30,
            )
            clients = {
                "unix": OpaAuthorizer(f"unix://{sock}", timeout_seconds=2.0),
                "tls": OpaAuthorizer(
                    f"https://127.0.0.1:{tls_port}", timeout_seconds=2.0, ssl_context=tls_context
                ),
            }

            async def measure() -> dict[str, list[float]]:
                samples: dict[str, list[float]] = {name: [] for name in clients}
                for client in clients.values():
                    for _ in range(50):  # warm-up: connection, first-call costs
                        await client.decide(example)
                rounds = 10
                for _ in range(rounds):
                    for name, client in clients.items():
                        for _ in range(max(1, count // rounds)):
                            start = time.perf_counter()
                            decision = await client.decide(example)
                            samples[name].append((time.perf_counter() - start) * 1e6)
                            assert decision.allow
                for client in clients.values():
                    await client.close()
                return samples

            return asyncio.run(measure())
        finally:
            for proc in procs.values():
                stop_group(proc.pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="benchmark three examples only")
    parser.add_argument("--count", type=int, default=1, help="opa bench runs per query")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--round-trips", type=int, default=None, help="decisions per transport (default 3000)"
    )
    args = parser.parse_args(argv)
    trips = args.round_trips or (500 if args.quick else 3000)

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

    with console.status("timing decision round trips …"):
        trip_samples = round_trips(opa, trips)
    trip_table = Table(
        title=f"decision round trip through the service's OPA client (allow-predict, "
        f"{len(trip_samples['unix'])} decisions each, alternating rounds, one keep-alive "
        "connection)"
    )
    for column in ("transport", "p50 µs", "p99 µs", "mean µs", "p50 ratio"):
        trip_table.add_column(column, justify="left" if column == "transport" else "right")
    tls_p50 = percentile(trip_samples["tls"], 0.5)
    for name, label in (
        ("tls", "loopback TCP + mutual TLS (baseline)"),
        ("unix", "Unix domain socket (ztml up, pod)"),
    ):
        values = trip_samples[name]
        trip_table.add_row(
            label,
            f"{percentile(values, 0.5):.0f}",
            f"{percentile(values, 0.99):.0f}",
            f"{statistics.fmean(values):.0f}",
            f"{percentile(values, 0.5) / tls_p50:.2f}×",
        )
    console.print(trip_table)
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
        figures["round_trip"] = {
            name: {"p50_us": percentile(v, 0.5), "p99_us": percentile(v, 0.99)}
            for name, v in trip_samples.items()
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
