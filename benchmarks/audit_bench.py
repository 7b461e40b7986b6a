"""Audit log throughput: append and verify, beside plain JSON Lines measured in the same run.

* append: ``AuditLog.append`` (validation, hot-path encoding, SHA-256 link, one unbuffered
  ``write`` per event; signed checkpoint every 1,000 events, anchored to a file) against
  writing the same events as plain JSON Lines (``json.dumps`` + ``write`` + ``flush``).
  Durability is stated per row: ``fsync="checkpoint"`` (the default: every event reaches
  the OS before ``append`` returns, fsync at each checkpoint) is the target row; ``never``
  and ``always`` are shown for reference (``always`` beside plain lines fsync'ed each).
  Targets: >= 20,000 events/s and >= 0.5x plain.
* verify: ``verify_audit_dir`` (every link hash, sequence number, checkpoint signature
  and anchor) against ``json.loads`` of the same lines. Target: >= 100,000 events/s.
* encoding: the audit log's fast deterministic encoding (sorted-key compact
  ``json.dumps``, see ``service.audit.encoding``) against RFC 8785 (``rfc8785``) for the
  link hash of one event, and the hot path's checked, directly formatted event bytes
  (``encode_event``) against checking and RFC 8785-encoding the same event.

Each figure is the best of several interleaved rounds (the machine may be shared).

    .venv/bin/python -m benchmarks.audit_bench           # 100,000 events, 3 rounds
    .venv/bin/python -m benchmarks.audit_bench --quick   # 20,000 events, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from service.audit import AuditLog, FileAnchorSink, fast_encode, verify_audit_dir
from service.audit.events import encode_event, normalize_event
from service.chain.core import GENESIS_HASH, link_hash
from service.keys.canonical import canonical_json
from service.keys.store import Signer, TrustStore

TARGET_APPEND = 20_000
TARGET_RATIO = 0.5
TARGET_VERIFY = 100_000


def make_events(count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for n in range(count):
        allow = rng.random() < 0.9
        events.append(
            {
                # one event per second, in order (a chain's time never goes back)
                "time": f"2026-11-{22 + n // 86400:02d}T{n // 3600 % 24:02d}:"
                f"{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z",
                "kind": "request",
                "request_id": f"req-{n:08d}",
                "subject": rng.choice(["alice", "bob", "carol"]),
                "tenant": "acme",
                "model_digest": "sha256:" + "ab" * 32,
                "action": rng.choice(["predict", "explain", "metadata"]),
                "decision": {
                    "allow": allow,
                    "reasons": [] if allow else ["rate limit exceeded"],
                    "decision_id": f"dec-{n:08d}",
                },
                "status": 200 if allow else 429,
                "latency_ms": round(rng.uniform(1, 40), 3),
                "input_digest": "sha256:" + rng.randbytes(32).hex(),
                "client": f"10.0.{n % 7}.{n % 250}",
            }
        )
    return events


def rate(count: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def audit_append(
    directory: Path, signer: Signer, events: list[dict[str, Any]], fsync: str
) -> float:
    log = AuditLog(directory, signer, fsync=fsync, checkpoint_every=1000)  # type: ignore[arg-type]

    def run() -> None:
        append = log.append
        for event in events:
            append(event)
        log.close()

    return rate(len(events), run)


def plain_append(path: Path, events: list[dict[str, Any]], *, fsync: bool = False) -> float:
    def run() -> None:
        with path.open("w") as handle:
            for event in events:
                handle.write(json.dumps(event) + "\n")
                handle.flush()
                if fsync:
                    os.fsync(handle.fileno())

    return rate(len(events), run)


def plain_loads(directory: Path) -> float:
    segments = sorted(directory.glob("*/segment-*.jsonl"))
    count = 0

    def run() -> None:
        nonlocal count
        for path in segments:
            for line in path.read_bytes().split(b"\n")[:-1]:
                json.loads(line)
                count += 1

    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 2 rounds")
    args = parser.parse_args(argv)
    count, rounds = (20_000, 2) if args.quick else (100_000, 3)
    fsync_count = 500 if args.quick else 2000
    events = make_events(count)
    signer = Signer("audit", Ed25519PrivateKey.generate())
    trust = TrustStore.from_public_keys([signer.public_key])
    console = Console()
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = max(best.get(name, 0.0), value)

    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        root = Path(tmp)
        for r in range(rounds):
            with console.status(f"round {r + 1}/{rounds}"):
                keep("plain", plain_append(root / f"plain-{r}.jsonl", events))
                keep(
                    "checkpoint",
                    audit_append(root / f"a{r}" / "audit", signer, events, "checkpoint"),
                )
                keep("never", audit_append(root / f"n{r}" / "audit", signer, events, "never"))
                keep("plain", plain_append(root / f"plain-{r}b.jsonl", events))
                few = events[:fsync_count]
                keep("always", audit_append(root / f"s{r}" / "audit", signer, few, "always"))
                keep("plain_fsync", plain_append(root / f"pf-{r}.jsonl", few, fsync=True))
                audit_dir = root / f"a{r}" / "audit"
                sink = FileAnchorSink(audit_dir.parent / "audit-anchors.jsonl")
                start = time.perf_counter()
                report = verify_audit_dir(audit_dir, trust, anchors=sink)
                keep("verify", report.events / (time.perf_counter() - start))
                keep("loads", plain_loads(audit_dir))
                sample = events[: count // 4]
                keep(
                    "fast",
                    rate(
                        len(sample),
                        lambda s=sample: [
                            link_hash(0, GENESIS_HASH, e, encode=fast_encode) for e in s
                        ],
                    ),
                )
                keep(
                    "rfc8785",
                    rate(len(sample), lambda s=sample: [link_hash(0, GENESIS_HASH, e) for e in s]),
                )
                keep(
                    "encode_event", rate(len(sample), lambda s=sample: [encode_event(e) for e in s])
                )
                keep(
                    "encode_rfc",
                    rate(
                        len(sample),
                        lambda s=sample: [canonical_json(normalize_event(e)) for e in s],
                    ),
                )
                line_bytes = (
                    (audit_dir / report.logs[0].log_id / "segment-000001.jsonl").stat().st_size
                )

    table = Table(
        title=f"audit log, {count:,} events, best of {rounds} rounds ({os.cpu_count()} CPUs)"
    )
    for column in (
        "measure",
        "events/s",
        "baseline",
        "baseline events/s",
        "ratio",
        "target",
        "met",
    ):
        table.add_column(
            column, justify="left" if column in ("measure", "baseline", "target") else "right"
        )

    def row(
        measure: str, value: float, baseline: str, base: float, target: str, met: bool | None
    ) -> None:
        table.add_row(
            measure,
            f"{value:,.0f}",
            baseline,
            f"{base:,.0f}",
            f"{value / base:.2f}x",
            target,
            "-" if met is None else ("[green]yes[/green]" if met else "[red]NO[/red]"),
        )

    ok_append = (
        best["checkpoint"] >= TARGET_APPEND and best["checkpoint"] / best["plain"] >= TARGET_RATIO
    )
    row(
        "append, fsync=checkpoint (default)",
        best["checkpoint"],
        "plain JSON Lines + flush",
        best["plain"],
        ">= 20,000/s and >= 0.5x",
        ok_append,
    )
    row("append, fsync=never", best["never"], "plain JSON Lines + flush", best["plain"], "", None)
    row(
        "append, fsync=always",
        best["always"],
        "plain JSON Lines + fsync each",
        best["plain_fsync"],
        "",
        None,
    )
    row(
        "verify (hash, seq, signatures, anchors)",
        best["verify"],
        "json.loads of the lines",
        best["loads"],
        ">= 100,000/s",
        best["verify"] >= TARGET_VERIFY,
    )
    row("link hash, fast encoding", best["fast"], "link hash, RFC 8785", best["rfc8785"], "", None)
    row(
        "check + encode event (hot path)",
        best["encode_event"],
        "check + RFC 8785 encode",
        best["encode_rfc"],
        "",
        None,
    )
    console.print(table)
    console.print(
        f"first segment: {line_bytes:,} bytes; mean line {line_bytes / max(1, count):.0f} B"
    )
    return 0 if ok_append and best["verify"] >= TARGET_VERIFY else 1


if __name__ == "__main__":
    raise SystemExit(main())
