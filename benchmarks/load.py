"""Bounded load and soak runs against a running ztml stack on loopback.

Mixed traffic: valid predictions (many subjects, so per-subject limits are not the
bottleneck), invalid inputs (422) and unauthorized calls (401). It checks what a soak must
show: no error on valid requests, bounded RSS growth of the stack's processes, one audit
event per request, and an intact audit log afterwards.

    python -m benchmarks.load --minutes 5          # starts its own stack in a temp ZTML_HOME
    ZTML_HOME=~/.ztml python -m benchmarks.load --use-running --minutes 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ZTML = str(Path(sys.executable).with_name("ztml"))
EXPECTED = {"valid": {200}, "invalid": {422}, "unauthorized": {401}}


@dataclass
class LoadResult:
    """What a load run saw."""

    sent: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    measured: int = 0
    rss_start: int = 0
    rss_end: int = 0

    @property
    def total(self) -> int:
        """Requests sent, warm-up included."""
        return sum(self.sent.values())

    def unexpected(self, kind: str) -> int:
        """Responses of ``kind`` whose status was not the expected one."""
        return sum(
            n for s, n in self.statuses.get(kind, Counter()).items() if s not in EXPECTED[kind]
        )

    @property
    def rss_growth(self) -> float:
        """Relative growth of the stack's resident memory over the measured run."""
        return (self.rss_end - self.rss_start) / self.rss_start if self.rss_start else 0.0


def stack_rss(leader_pids: list[int]) -> int:
    """Resident memory of every process in the given process groups."""
    total = 0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) in leader_pids:
                total += proc.memory_info().rss
        except (psutil.Error, ProcessLookupError):
            continue
    return total


def _rows(count: int) -> list[list[float]]:
    from service.model.data import load_splits

    return [[float(v) for v in row] for row in load_splits().x_test[:count]]


def _tokens(home: Path, subjects: int) -> list[str]:
    from service.authn.issuer import issue_local_token, local_signer

    signer = local_signer(home)
    return [
        issue_local_token(
            home,
            sub=f"load-{i}",
            roles=["analyst"],
            tenant="demo",
            scopes=["predict", "explain", "metadata"],
            ttl_seconds=3600,
            signer=signer,
        )
        for i in range(subjects)
    ]


async def run_load(
    *,
    base_url: str,
    home: Path,
    leader_pids: list[int],
    requests: int | None = None,
    seconds: float | None = None,
    concurrency: int = 4,
    subjects: int = 200,
    warmup: int = 50,
    seed: int = 0,
    verify: ssl.SSLContext | bool = True,
) -> LoadResult:
    """Send mixed traffic until ``requests`` are sent or ``seconds`` have passed."""
    rng = random.Random(seed)
    rows = _rows(300)
    tokens = _tokens(home, subjects)
    result = LoadResult()
    budget = {"left": requests if requests is not None else sys.maxsize}
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")

    def pick() -> tuple[str, dict[str, str], object]:
        roll = rng.random()
        good = {"Authorization": f"Bearer {rng.choice(tokens)}"}
        if roll < 0.7:
            return "valid", good, {"instances": [rng.choice(rows)]}
        if roll < 0.85:
            bad = list(rng.choice(rows))
            bad[rng.randrange(64)] = rng.choice([1.5, -0.2])
            return "invalid", good, {"instances": [bad]}
        return "unauthorized", {"Authorization": "Bearer not.a.token"}, {"instances": [rows[0]]}

    async def worker(client: httpx.AsyncClient, record: bool) -> None:
        while budget["left"] > 0 and time.monotonic() < deadline:
            budget["left"] -= 1
            kind, headers, body = pick()
            start = time.perf_counter()
            reply = await client.post("/predict", json=body, headers=headers)
            if record:
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
                result.measured += 1
            result.sent[kind] += 1
            result.statuses.setdefault(kind, Counter())[reply.status_code] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30, limits=limits, verify=verify
    ) as client:
        saved = budget["left"]
        budget["left"] = warmup
        await asyncio.gather(*(worker(client, False) for _ in range(concurrency)))
        budget["left"] = saved
        result.rss_start = stack_rss(leader_pids)
        began = time.monotonic()
        await asyncio.gather(*(worker(client, True) for _ in range(concurrency)))
        result.seconds = time.monotonic() - began
        result.rss_end = stack_rss(leader_pids)
    return result


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _count_request_events(home: Path) -> int:
    from service.audit.reader import last_records

    return sum(1 for r in last_records(home / "audit", 10**9) if r.event.get("kind") == "request")


def main(argv: list[str] | None = None) -> int:
    """Run a soak and print its figures; non-zero exit if a soak property fails."""
    from rich.console import Console
    from rich.table import Table

    from service.stack.state import read_state

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--use-running", action="store_true", help="use the stack in $ZTML_HOME")
    parser.add_argument("--opa-timeout-ms", type=int, default=1000)
    parser.add_argument(
        "--subjects", type=int, default=1500, help="distinct callers (analyst: 60/min each)"
    )
    args = parser.parse_args(argv)
    console = Console()

    owned = not args.use_running
    home = None
    if owned:
        scratch = Path(tempfile.mkdtemp(prefix="ztml-soak-"))
        scratch.chmod(0o711)  # a root `ztml up` runs its servers as an unprivileged user
        home = scratch / "home"
    if home is None:
        from service.toolchain.paths import ztml_home

        home = ztml_home()
    # OPA's decision budget for the soak's own stack (the product default is 250 ms).
    # The whole soak is one client: size the service-wide flood threshold to the load it
    # sends (per-subject limits stay the policy's: traffic is spread over many subjects).
    env = {
        **os.environ,
        "ZTML_HOME": str(home),
        "ZTML_OPA_TIMEOUT_MS": str(args.opa_timeout_ms),
        "ZTML_FLOOD_GLOBAL_PER_MINUTE": "600000",
    }
    os.environ["ZTML_HOME"] = str(home)
    if owned:
        console.print(f"starting a stack in {home} (trains the demo model if needed) ...")
        subprocess.run(
            [ZTML, "up", "--detach", "--workers", str(args.workers)], env=env, check=True
        )
    state = read_state(home)
    if state is None:
        console.print(f"[red]no stack is running in {home}[/red]")
        return 1
    try:
        before = _count_request_events(home)
        result = asyncio.run(
            run_load(
                base_url=state.service_url,
                home=home,
                leader_pids=[state.opa.pid, state.service.pid],
                seconds=args.minutes * 60,
                concurrency=args.concurrency,
                subjects=args.subjects,
                verify=state.caller_context(),
            )
        )
        time.sleep(1.0)
        audited = _count_request_events(home) - before
        verify = subprocess.run([ZTML, "audit", "verify"], env=env, capture_output=True, text=True)
    finally:
        if owned:
            subprocess.run([ZTML, "down"], env=env, check=False)
    p50, p99 = _percentile(result.latencies_ms, 0.5), _percentile(result.latencies_ms, 0.99)
    rss = f"{result.rss_start / 2**20:.0f} -> {result.rss_end / 2**20:.0f} MiB"
    table = Table(title=f"soak: {result.seconds:.0f} s, concurrency {args.concurrency}")
    for column in ("figure", "value", "target"):
        table.add_column(column)
    table.add_row("requests (measured, after warm-up)", str(result.measured), "")
    table.add_row("throughput", f"{result.measured / result.seconds:.0f} req/s", "")
    table.add_row(
        "p50 / p99 latency",
        f"{p50:.1f} / {p99:.1f} ms",
        "",
    )
    table.add_row("errors on valid requests", str(result.unexpected("valid")), "0")
    for kind in ("valid", "invalid", "unauthorized"):
        seen = ", ".join(f"{code}: {n}" for code, n in sorted(result.statuses[kind].items()))
        table.add_row(f"statuses, {kind}", seen, "")
    table.add_row(
        "wrong status, invalid / unauthorized",
        f"{result.unexpected('invalid')} / {result.unexpected('unauthorized')}",
        "0 / 0",
    )
    table.add_row(
        "RSS start -> end",
        f"{rss} ({result.rss_growth:+.1%})",
        "< +10%",
    )
    table.add_row("audit request events / requests", f"{audited} / {result.total}", "equal")
    table.add_row("ztml audit verify", "pass" if verify.returncode == 0 else "FAIL", "pass")
    console.print(table)
    ok = (
        result.unexpected("valid") == 0
        and result.rss_growth < 0.10
        and audited == result.total
        and verify.returncode == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
