"""What the admission webhook adds to an API-server write: a dry-run pod create, with and without.

Against a cluster where the stack is deployed with its webhook (``ztml:admissionWebhook``
on), this makes two namespaces that differ only in the webhook's label (the same Pod
Security labels, no quota or LimitRange): ``ztml-bench-protected`` carries
``ztml.dev/admission=<webhook namespace>``, ``ztml-bench-plain`` does not. It then sends
server-side dry-run creates of one hardened pod (``POST .../pods?dryRun=All``: every
admission step runs, nothing is stored or scheduled) to both, interleaved so both see
the same load, over one kept-alive HTTPS connection with the kubeconfig's client
certificate, and prints p50/p99 of each beside the other with the ratio and the
difference. Before timing it checks that the webhook is in the path: a root pod is
refused in the protected namespace and admitted in the plain one (Pod Security
``baseline`` in both, which admits a root pod, so only the webhook refuses it). The
namespaces are deleted at the end.

    .venv/bin/python -m benchmarks.admission_bench                 # 300 creates each
    .venv/bin/python -m benchmarks.admission_bench --quick         # 50 creates each
    .venv/bin/python -m benchmarks.admission_bench --kubeconfig FILE --webhook-namespace NS

It needs the deployed stack (``python -m infra.automation up``, as the README's cluster
section shows) and a kubeconfig whose user may create namespaces and pods.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import ssl
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from service.cluster.layout import Layout
from service.toolchain.paths import POLICIES_DIR

PROTECTED = "ztml-bench-protected"
PLAIN = "ztml-bench-plain"
ADMISSION_LABEL = "ztml.dev/admission"
# The same Pod Security level in both namespaces; baseline lets the root pod of the
# sanity check through, so only the webhook can refuse it.
PSA_LABELS = {"pod-security.kubernetes.io/enforce": "baseline"}


@dataclass(frozen=True)
class Timing:
    """Latency percentiles of one kind of request, in milliseconds."""

    p50_ms: float
    p99_ms: float
    count: int


def _percentiles(samples: list[float]) -> Timing:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Timing(statistics.median(ordered) * 1000, p99 * 1000, len(ordered))


def client_for(kubeconfig: Path) -> httpx.Client:
    """An HTTPS client for the kubeconfig's current context (client-certificate users only)."""
    import yaml

    document = yaml.safe_load(kubeconfig.read_text())  # JSON is YAML too
    context_name = document["current-context"]
    context = next(c["context"] for c in document["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in document["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in document["users"] if u["name"] == context["user"])
    # One SSLContext with the CA and the client pair: httpx 0.28 ignores ``cert=`` beside a
    # ``verify`` path, and the API server then answers 401.
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    return httpx.Client(base_url=cluster["server"], verify=context, timeout=30.0)


def hardened_pod() -> dict[str, Any]:
    """The good Deployment example's pod, without its (absent) ServiceAccount."""
    example = json.loads(
        (POLICIES_DIR / "examples" / "admission" / "good-deployment" / "input.json").read_text()
    )
    template = example["review"]["object"]["spec"]["template"]
    spec = dict(template["spec"])
    spec.pop("serviceAccountName", None)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "admission-bench", "labels": template["metadata"]["labels"]},
        "spec": spec,
    }


def root_pod() -> dict[str, Any]:
    """The hardened pod running as root: the admission policy refuses it."""
    pod = copy.deepcopy(hardened_pod())
    pod["metadata"]["name"] = "admission-bench-root"
    pod["spec"]["securityContext"] = {"runAsUser": 0}
    for container in pod["spec"]["containers"]:
        container["securityContext"].pop("runAsNonRoot", None)
        container["securityContext"]["runAsUser"] = 0
    return pod


def make_namespace(client: httpx.Client, name: str, labels: dict[str, str]) -> None:
    """Create ``name`` (or relabel it) and wait for its default ServiceAccount."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    response = client.post("/api/v1/namespaces", json=body)
    if response.status_code == 409:
        patch = {"metadata": {"labels": labels}}
        client.patch(
            f"/api/v1/namespaces/{name}",
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
    else:
        response.raise_for_status()
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"namespace {name} has no default ServiceAccount after 60 s")
        time.sleep(0.5)


def dry_run_create(client: httpx.Client, namespace: str, pod: dict[str, Any]) -> httpx.Response:
    """A server-side dry-run create of ``pod`` in ``namespace``."""
    return client.post(f"/api/v1/namespaces/{namespace}/pods", params={"dryRun": "All"}, json=pod)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 creates per namespace")
    parser.add_argument("--iterations", type=int, default=300, help="creates per namespace")
    parser.add_argument(
        "--kubeconfig", type=Path, default=None, help="default: the local cluster's admin"
    )
    parser.add_argument(
        "--webhook-namespace",
        default="ztml-admission",
        help="the webhook's namespace, i.e. the value of its namespace label",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    iterations = 50 if args.quick else args.iterations
    kubeconfig = args.kubeconfig or Path(
        os.environ.get("KUBECONFIG") or Layout.default().kubeconfig
    )
    console = Console(width=max(Console().width, 110))
    pod = hardened_pod()
    with client_for(kubeconfig) as client:
        protected_labels = {**PSA_LABELS, ADMISSION_LABEL: args.webhook_namespace}
        make_namespace(client, PROTECTED, protected_labels)
        make_namespace(client, PLAIN, dict(PSA_LABELS))
        try:
            refused = dry_run_create(client, PROTECTED, root_pod())
            admitted = dry_run_create(client, PLAIN, root_pod())
            if refused.status_code != 403 or "admission.ztml.dev" not in refused.text:
                raise SystemExit(
                    f"the webhook did not refuse a root pod in {PROTECTED} "
                    f"({refused.status_code}: {refused.text[:300]}): is the stack deployed "
                    f"with ztml:admissionWebhook on, and is --webhook-namespace right?"
                )
            if admitted.status_code != 201:
                raise SystemExit(f"{PLAIN} refused the root pod: {admitted.text[:300]}")
            for namespace in (PROTECTED, PLAIN):  # warm up connections and caches
                for _ in range(5):
                    dry_run_create(client, namespace, pod).raise_for_status()
            samples: dict[str, list[float]] = {PROTECTED: [], PLAIN: []}
            with console.status(f"{iterations} dry-run creates in each namespace…"):
                for index in range(iterations):
                    order = (PROTECTED, PLAIN) if index % 2 == 0 else (PLAIN, PROTECTED)
                    for namespace in order:
                        started = time.perf_counter()
                        response = dry_run_create(client, namespace, pod)
                        elapsed = time.perf_counter() - started
                        response.raise_for_status()
                        samples[namespace].append(elapsed)
        finally:
            for namespace in (PROTECTED, PLAIN):
                client.delete(f"/api/v1/namespaces/{namespace}")
    webhook, baseline = _percentiles(samples[PROTECTED]), _percentiles(samples[PLAIN])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = Table(
        title=f"API-server dry-run pod create, {iterations} each, interleaved "
        f"(load avg {load:.1f} on {os.cpu_count()} CPUs)"
    )
    for column in ("request", "p50 ms", "p99 ms", "baseline p50 ms", "baseline p99 ms"):
        table.add_column(column, justify="left" if column == "request" else "right")
    table.add_column("p50 ratio", justify="right")
    table.add_column("p50 added ms", justify="right")
    table.add_row(
        f"with the webhook ({PROTECTED}) vs without ({PLAIN})",
        f"{webhook.p50_ms:.2f}",
        f"{webhook.p99_ms:.2f}",
        f"{baseline.p50_ms:.2f}",
        f"{baseline.p99_ms:.2f}",
        f"{webhook.p50_ms / baseline.p50_ms:.2f}×",
        f"{webhook.p50_ms - baseline.p50_ms:.2f}",
    )
    console.print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"webhook": vars(webhook), "baseline": vars(baseline)}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
