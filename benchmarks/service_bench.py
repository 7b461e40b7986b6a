"""Latency and throughput of the hardened ``/predict`` beside a bare BentoML endpoint.

Both servers run in the same run with the same worker count, the same model and the same
transport: TLS with the stack's certificate (the hardened one is the real stack as ``ztml
up`` runs it: OPA on a Unix socket + ``bentoml serve`` of
``service.app.service:ZtmlModelService``; the baseline ``benchmarks.bare_service`` under
``bentoml serve --ssl-certfile/--ssl-keyfile`` with the same certificate). An
async httpx client on loopback (one keep-alive TLS connection per concurrent
caller) sends a bounded number of single-image predictions with a fixed concurrency;
tokens of many subjects are used round-robin so per-subject limits do
not throttle the run (the policy would rightly deny one subject at thousands of requests
per minute). A caller reuses its token, and a worker verifies a token's signature once
(the pipeline's cache then answers for it until it expires), so each token is used once
in the warm-up and the figures are a caller's steady state; a last phase sends each
request with a token the service has not seen ("each token's first use": the signature
check included). Then each layer is timed in-process with ``perf_counter`` over many calls
(authn, rate limit + flood, extraction, OPA decision alone and with the squeezer run while
OPA evaluates, as the service does, sanitizer, squeezer, inference, audit append) to show
where the added latency goes; the hardened requests' own audit events give the time spent
inside the worker's pipeline, the rest being HTTP, BentoML and the client.

Targets: <= 1 ms added p50 (without explanation) and >= 0.7x the bare throughput.

    .venv/bin/python -m benchmarks.service_bench            # 2,000 requests per server
    .venv/bin/python -m benchmarks.service_bench --quick    # 400 requests per server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from service.audit.reader import last_records
from service.authn.issuer import issue_local_token
from service.stack.processes import free_port, start_process, stop_group, wait_ready
from service.stack.provision import (
    DemoModel,
    demo_model_dir,
    ensure_demo_model,
    ensure_keys_and_issuer,
)
from service.toolchain.paths import POLICIES_DIR, PROJECT_ROOT

console = Console()
STATUSES: dict[int, int] = {}
#: Request ids of the hardened service's latency samples (concurrency 1).
LATENCY_IDS: set[str] = set()
DENIALS: dict[str, int] = {}
TEST_CACHE = PROJECT_ROOT / ".pytest_cache" / "d" / "ztml-demo-model-pgd-tiny-v2"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_bare(home: Path, model_path: Path, workers: int = 1) -> tuple[int, str]:
    """Start ``benchmarks.bare_service`` on ``model_path`` with the stack's certificate.

    The same transport as the hardened service: TLS with its certificate. Returns the
    server's process group and its ``/predict`` URL.
    """
    from service.stack.tls import tls_dir

    port = free_port()
    log = home / f"bare-{port}.log"
    process = start_process(
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "benchmarks.bare_service:BareModelService",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ssl-certfile",
            str(tls_dir(home) / "server.pem"),
            "--ssl-keyfile",
            str(tls_dir(home) / "server.key"),
        ],
        log_path=log,
        env={
            **os.environ,
            "ZTML_MODEL_PATH": str(model_path),
            "ZTML_WORKERS": str(workers),
            # Its own BentoML home: a server clears its metrics directory at start.
            "BENTOML_HOME": str(home / "bentoml-bare"),
            "BENTOML_DO_NOT_TRACK": "True",
        },
        cwd=PROJECT_ROOT,
    )
    verify = ssl.create_default_context(cafile=str(tls_dir(home) / "ca.pem"))
    url = f"https://127.0.0.1:{port}"
    try:
        wait_ready(
            f"{url}/readyz",
            verify=verify,
            process=process,
            what="bare service",
            log_path=log,
            timeout=180,
        )
    except BaseException:
        from service.stack.processes import stop_group

        stop_group(process.pid)
        raise
    return process.pid, f"{url}/predict"


def prepare_home(home: Path, model_dir: Path | None) -> DemoModel:
    """Provision ``home`` as ``ztml up`` does, serving ``model_dir`` or the tests' model.

    Without either, the stack's own demo model is trained (the ``fast`` profile).
    """
    source = model_dir
    if source is None and (TEST_CACHE / "metrics.json").exists():
        source = TEST_CACHE
    ensure_keys_and_issuer(home)
    if source is not None:
        shutil.copytree(source, demo_model_dir(home))
    else:
        console.print("training the demo model for the benchmark ...")
    return ensure_demo_model(home, retrain=False, progress=lambda *_: None)


def tokens(home: Path, count: int, prefix: str = "bench") -> list[str]:
    return [
        issue_local_token(
            home,
            sub=f"{prefix}-{i}",
            roles=("predictor",),
            tenant="demo",
            scopes=("predict", "explain", "metadata"),
            ttl_seconds=3600,
        )
        for i in range(count)
    ]


def digit_body() -> bytes:
    from service.model.data import load_splits

    row = [round(float(v), 4) for v in load_splits().x_test[0]]
    return json.dumps({"instances": [row]}).encode()


async def drive(
    url: str,
    *,
    body: bytes | Sequence[bytes],
    auth: list[str] | None,
    total: int,
    concurrency: int,
    verify: ssl.SSLContext,
    warm_up: bool = True,
) -> tuple[list[float], float, int]:
    """Send ``total`` requests (after a warm-up); return latencies (ms), seconds, errors.

    The warm-up sends 50 requests, and one with each token: a caller reuses its token,
    and a worker verifies a token's signature once (then the pipeline's cache answers),
    so the measured requests are a caller's steady state. Without ``warm_up`` every
    request is the first use of its token (``auth`` must hold ``total`` fresh tokens).
    Several bodies are sent in turn, request ``i`` the ``i``-th (cyclically).
    """
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=30, limits=limits, verify=verify) as client:

        async def one(i: int, ids: set[str] | None = None) -> tuple[float, int]:
            headers = {"Content-Type": "application/json"}
            if auth is not None:
                headers["Authorization"] = f"Bearer {auth[i % len(auth)]}"
            start = time.perf_counter()
            content = body if isinstance(body, bytes) else body[i % len(body)]
            response = await client.post(url, content=content, headers=headers)
            ms = (time.perf_counter() - start) * 1000
            if ids is not None and "x-request-id" in response.headers:
                ids.add(response.headers["x-request-id"])
            return ms, response.status_code

        if warm_up:  # connections, first-call costs, each token's first use
            for i in range(max(min(50, total), len(auth or ()))):
                await one(i)

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                ms, status = await one(i, LATENCY_IDS if concurrency == 1 else None)
                latencies.append(ms)
                errors += status != 200
                if status != 200:
                    STATUSES[status] = STATUSES.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started, errors


def time_calls(fn: Callable[[int], Any], n: int) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def layer_timings(home: Path, model: Any, opa_url: str, n: int) -> list[tuple[str, list[float]]]:
    """Time each layer of the request path in this process (microseconds per call)."""
    import numpy as np
    import torch

    from service.app.config import load_config
    from service.app.gate import verify_model
    from service.app.layers import build_layers
    from service.monitor import admit
    from service.sanitizer import parse_instances

    config = load_config(
        {"ZTML_HOME": str(home), "ZTML_MODEL_PATH": str(model.path), "ZTML_OPA_URL": opa_url}
    )
    layers = build_layers(config, verify_model(config))
    body = digit_body()
    x = parse_instances(json.loads(body), max_batch=256)
    subject_tokens = tokens(home, 50)
    headers = [f"Bearer {t}" for t in subject_tokens]
    # The documented allowed predict request, for the model being served.
    example = json.loads((POLICIES_DIR / "examples/authz/allow-predict/input.json").read_text())
    policy_input = {**example, "model": {**example["model"], "digest": model.digest}}

    async def opa_samples() -> tuple[list[float], list[float], list[float]]:
        alone: list[float] = []
        sequential: list[float] = []
        overlapped: list[float] = []
        for _ in range(n):
            # Each measurement starts after a squeezer's time without a query, in which
            # OPA finishes its own work on the previous decision (its decision log).
            layers.squeezer.analyze(x)
            start = time.perf_counter()
            await layers.authorizer.decide(policy_input)
            alone.append((time.perf_counter() - start) * 1e6)
            layers.squeezer.analyze(x)
            start = time.perf_counter()
            await layers.authorizer.decide(policy_input)
            layers.squeezer.analyze(x)
            sequential.append((time.perf_counter() - start) * 1e6)
            layers.squeezer.analyze(x)
            # What the service does: squeeze while OPA evaluates, then read the decision.
            start = time.perf_counter()
            pending = await layers.authorizer.submit(policy_input)
            layers.squeezer.analyze(x)
            await pending.decision()
            overlapped.append((time.perf_counter() - start) * 1e6)
        await layers.authorizer.close()
        return alone, sequential, overlapped

    event = {
        "kind": "request",
        "request_id": "bench",
        "subject": "bench",
        "tenant": "demo",
        "model_digest": model.digest,
        "action": "predict",
        "decision": None,
        "status": 200,
        "latency_ms": 1.0,
        "input_digest": "sha256:" + "0" * 64,
        "client": "127.0.0.1",
    }
    xt = torch.from_numpy(x)

    def infer(_: int) -> None:
        with torch.no_grad():
            torch.softmax(layers.model(xt), dim=1)

    from service.app.pipeline import Pipeline

    pipeline = Pipeline(layers)
    rng = np.random.default_rng(0)
    opa_alone, opa_sequential, opa_overlapped = asyncio.run(opa_samples())
    results = [
        (
            "authn (JWT EdDSA verify)",
            time_calls(lambda i: layers.verifier.verify(headers[i % 50]), n),
        ),
        ("authn (token seen before)", time_calls(lambda i: pipeline._verify(headers[i % 50]), n)),
        (
            "rate limit + flood (one SQLite txn)",
            time_calls(
                lambda i: admit(
                    layers.rate_limiter, layers.flood, f"b{i}", rate_per_minute=1e6, burst=1000
                ),
                n,
            ),
        ),
        (
            "extraction (SQLite)",
            time_calls(
                lambda i: layers.extraction.observe(f"e{i % 50}", x + rng.random() * 1e-3), n
            ),
        ),
        ("OPA decision (keep-alive, Unix socket)", opa_alone),
        ("OPA decision, then squeezer", opa_sequential),
        ("squeezer during the OPA decision (service)", opa_overlapped),
        (
            "sanitizer (JSON + parse)",
            time_calls(lambda _: parse_instances(json.loads(body), max_batch=256), n),
        ),
        ("squeezer (4 forward passes)", time_calls(lambda _: layers.squeezer.analyze(x), n)),
        ("inference (1 forward pass)", time_calls(infer, n)),
        ("audit append", time_calls(lambda _: layers.audit.append(dict(event)), n)),
    ]
    layers.close()
    return results


Server = tuple[str, str, list[str] | None]  # name, URL, the tokens it is called with


def interleaved_rounds(
    servers: Sequence[Server],
    *,
    body: bytes | Sequence[bytes],
    total: int,
    concurrency: int,
    verify: ssl.SSLContext,
) -> tuple[dict[str, list[float]], dict[str, list[tuple[int, float, int]]]]:
    """Measure each server in two interleaved rounds (the machine may be shared).

    Each round sends ``total // 4`` requests one at a time to each server (latency: what a
    request costs), then ``total // 2`` at ``concurrency`` (throughput).

    Returns:
        Each server's latencies (ms), and its ``(requests, seconds, failures)`` per
        throughput round.
    """
    latency: dict[str, list[float]] = {name: [] for name, _, _ in servers}
    load: dict[str, list[tuple[int, float, int]]] = {name: [] for name, _, _ in servers}
    for _ in range(2):
        for name, url, use in servers:
            lat, _, _ = asyncio.run(
                drive(url, body=body, auth=use, total=total // 4, concurrency=1, verify=verify)
            )
            latency[name] += lat
        for name, url, use in servers:
            lat, seconds, failed = asyncio.run(
                drive(
                    url,
                    body=body,
                    auth=use,
                    total=total // 2,
                    concurrency=concurrency,
                    verify=verify,
                )
            )
            load[name].append((len(lat), seconds, failed))
    return latency, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 requests per server")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, choices=[1, 2])
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="model.safetensors + metrics.json"
    )
    args = parser.parse_args(argv)
    total = args.requests or (400 if args.quick else 2000)
    layer_calls = 300 if args.quick else 2000

    from service.stack.runner import StackOptions, start_stack, stop_stack

    home = Path(tempfile.mkdtemp(prefix="ztml-bench-"))
    os.environ["ZTML_HOME"] = str(home)
    state = None
    pipeline_ms: list[float] = []
    bare_pid = None
    try:
        model = prepare_home(home, args.model_dir)
        env = {
            "ZTML_RATE_PER_MINUTE": "1000000",
            "ZTML_RATE_BURST": "100000",
            "ZTML_FLOOD_GLOBAL_PER_MINUTE": "1000000",
        }
        console.print(
            f"starting the hardened stack and the bare service ({args.workers} worker(s)) ..."
        )
        state = start_stack(
            StackOptions(
                home=home,
                model_path=model.path,
                model_digest=model.digest,
                workers=args.workers,
                extra_env=env,
            )
        )
        bare_pid, bare_url = start_bare(home, model.path, args.workers)
        from service.stack.tls import tls_dir

        verify = ssl.create_default_context(cafile=str(tls_dir(home) / "ca.pem"))
        body = digit_body()
        auth = tokens(home, 500)
        servers = (
            ("bare", bare_url, None),
            ("hardened", f"{state.service_url}/predict", auth),
        )
        first_use: dict[str, list[float]] = {"bare": [], "hardened": []}
        latency, load = interleaved_rounds(
            servers, body=body, total=total, concurrency=args.concurrency, verify=verify
        )
        # Each token's first use: the hardened service also verifies its signature.
        for name, url, use in servers:
            fresh = None if use is None else tokens(home, total // 4, prefix="first")
            lat, _, _ = asyncio.run(
                drive(
                    url,
                    body=body,
                    auth=fresh,
                    total=total // 4,
                    concurrency=1,
                    verify=verify,
                    warm_up=use is None,
                )
            )
            first_use[name] = lat
        console.print("timing each layer in-process ...")
        layers = layer_timings(home, model, state.opa_url, layer_calls)
    finally:
        if bare_pid is not None:
            stop_group(bare_pid)
        if state is not None:
            stop_stack(state)
            log = Path(state.service.log)
            if log.exists():
                for line in log.read_text(errors="replace").splitlines():
                    if " denied: " in line or "failed" in line:
                        reason = line.split(" denied: ", 1)[-1].split(" (trace=", 1)[0][-160:]
                        DENIALS[reason] = DENIALS.get(reason, 0) + 1
            pipeline_ms = [
                float(r.event["latency_ms"])
                for r in last_records(home / "audit", sys.maxsize)
                if r.event.get("kind") == "request" and r.event.get("request_id") in LATENCY_IDS
            ]
        if os.environ.get("ZTML_BENCH_KEEP"):
            console.print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

    def rate(name: str) -> float:
        return sum(n for n, _, _ in load[name]) / sum(t for _, t, _ in load[name])

    def errors(name: str) -> int:
        return sum(e for _, _, e in load[name])

    table = Table(
        title=(
            f"/predict, 1 image, both over TLS 1.3: latency at concurrency 1 ({total // 2} "
            f"requests), throughput at concurrency {args.concurrency} ({total} requests), "
            f"{args.workers} worker(s)"
        )
    )
    table.add_column("figure")
    table.add_column("hardened", justify="right")
    table.add_column("bare BentoML", justify="right")
    table.add_column("ratio / added", justify="right")
    table.add_column("target")
    for q, label in ((0.5, "p50 latency ms"), (0.99, "p99 latency ms")):
        h, b = percentile(latency["hardened"], q), percentile(latency["bare"], q)
        target = "<= 1 ms added" if q == 0.5 else ""
        table.add_row(label, f"{h:.2f}", f"{b:.2f}", f"+{h - b:.2f} ms", target)
    h, b = percentile(first_use["hardened"], 0.5), percentile(first_use["bare"], 0.5)
    table.add_row("p50 ms, each token's first use", f"{h:.2f}", f"{b:.2f}", f"+{h - b:.2f} ms", "")
    hard_rps, bare_rps = rate("hardened"), rate("bare")
    table.add_row(
        "throughput req/s",
        f"{hard_rps:.0f}",
        f"{bare_rps:.0f}",
        f"{hard_rps / bare_rps:.2f}x",
        ">= 0.7x",
    )
    table.add_row("non-200 responses", str(errors("hardened")), str(errors("bare")), "", "0")
    console.print(table)
    if STATUSES:
        console.print(f"non-200 statuses: {STATUSES}; service log: {DENIALS}")

    if pipeline_ms:
        split = Table(title="where a hardened request's time goes (latency samples, p50 ms)")
        split.add_column("part")
        split.add_column("p50 ms", justify="right")
        hard, inside = percentile(latency["hardened"], 0.5), percentile(pipeline_ms, 0.5)
        split.add_row("client-side total", f"{hard:.2f}")
        split.add_row(
            "in the worker's pipeline (authn .. audit; audit latency_ms)", f"{inside:.2f}"
        )
        split.add_row("outside it (HTTP, BentoML, middleware, client)", f"{hard - inside:.2f}")
        split.add_row("bare BentoML, client-side total", f"{percentile(latency['bare'], 0.5):.2f}")
        console.print(split)

    layer_table = Table(title=f"added latency per layer, in-process, {layer_calls} calls each")
    layer_table.add_column("layer")
    layer_table.add_column("p50 µs", justify="right")
    layer_table.add_column("p99 µs", justify="right")
    layer_table.add_column("mean µs", justify="right")
    for name, samples in layers:
        layer_table.add_row(
            name,
            f"{percentile(samples, 0.5):.0f}",
            f"{percentile(samples, 0.99):.0f}",
            f"{statistics.fmean(samples):.0f}",
        )
    console.print(layer_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
