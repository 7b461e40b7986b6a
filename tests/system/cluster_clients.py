"""Clients of the stack on the local cluster: pods that call it, and what they see.

Clients are pods on the cluster's network that call the ClusterIP Service by its DNS
name, as an application in the cluster would; their requests are made by a small script
run in a pod of the service image (Python's standard library only), so every answer
crossed kube-proxy, the NetworkPolicies enforced by kube-router, and the pod's own layers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.service.app.harness import digit_rows
from tests.service.cluster.fixtures import Cluster
from tests.system.cluster_stack import NAMESPACE, WORKLOAD, ClusterStack

SERVICE_URL = f"https://{WORKLOAD}.{NAMESPACE}.svc.cluster.local:3000"
CLIENT_LABEL = "ztml.dev/client"
# Run in a client pod: send each request of a JSON plan over TLS, verifying the service
# with the CA given (a step may say "ca": null to use the system's CAs, which do not
# include the stack's); print the statuses as JSON. A failure to connect or to complete
# the handshake is status 0 with the error's name.
REQUESTER = """
import json, ssl, sys, time, urllib.error, urllib.request
given = json.loads(sys.argv[1])
out = []
for step in given["plan"]:
    ca = step.get("ca", given["ca"])
    context = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
    data = step.get("body")
    request = urllib.request.Request(
        step["url"], method=step.get("method", "GET"), headers=step.get("headers", {}),
        data=data.encode() if data is not None else None,
    )
    try:
        with urllib.request.urlopen(
            request, timeout=step.get("timeout", 10), context=context
        ) as reply:
            out.append({"status": reply.status, "body": reply.read().decode()[:400]})
    except urllib.error.HTTPError as err:
        out.append({"status": err.code, "body": err.read().decode()[:400]})
    except Exception as err:
        cause = getattr(err, "reason", err)
        out.append({"status": 0, "body": type(cause).__name__})
    time.sleep(step.get("pause", 0))
print(json.dumps(out))
"""
# Run in a pod: try a TCP connection to each (host, port); print what happened.
CONNECTOR = """
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close()
        out.append("connected")
    except OSError as err:
        out.append(type(err).__name__)
print(json.dumps(out))
"""


def client_pod(stack: ClusterStack, name: str, *, labelled: bool) -> str:
    """A pod of the service image in the stack's namespace; return its name."""
    cluster = stack.cluster
    labels = {"app": name, **({CLIENT_LABEL: "true"} if labelled else {})}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10009,
                "runAsGroup": 10009,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": cluster.images["model-service"],
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(86400)"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                }
            ],
        },
    }
    if cluster.kubectl("-n", NAMESPACE, "get", "pod", name).returncode != 0:
        proc = cluster.apply(pod)
        assert proc.returncode == 0, proc.stderr
    cluster.wait_ready(NAMESPACE, name, timeout=120)
    return name


def python_in(
    cluster: Cluster, pod: str, script: str, argument: Any, *, container: str | None = None
) -> Any:
    where = ["-c", container] if container else []
    proc = cluster.kubectl(
        "-n",
        NAMESPACE,
        "exec",
        pod,
        *where,
        "--",
        "python",
        "-c",
        script,
        json.dumps(argument),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def send(stack: ClusterStack, pod: str, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ca = stack.config()["ztml:serviceCaBundle"]
    result: list[dict[str, Any]] = python_in(
        stack.cluster, pod, REQUESTER, {"ca": ca, "plan": plan}
    )
    return result


def predict(
    token: str | None, rows: list[list[float]] | None = None, **extra: Any
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"instances": rows or digit_rows(1)})
    return {"url": f"{SERVICE_URL}/predict", "method": "POST", "headers": headers, "body": body}


def pod_ip(cluster: Cluster, pod: str) -> str:
    proc = cluster.kubectl("-n", NAMESPACE, "get", "pod", pod, "-o", "jsonpath={.status.podIP}")
    assert proc.returncode == 0 and proc.stdout, proc.stderr
    return proc.stdout


def deployment(cluster: Cluster) -> dict[str, Any]:
    proc = cluster.kubectl("-n", NAMESPACE, "get", "deployment", WORKLOAD, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


def copy_audit_log(cluster: Cluster, pod: str, dest: Path) -> Path:
    """Copy a model pod's audit segments, anchors and audit public key into ``dest``.

    Never the private key. Returns ``dest``, a home that ``ztml audit verify`` reads.
    """
    listing = cluster.exec(NAMESPACE, pod, "ls", "/var/lib/ztml")
    assert listing.returncode == 0, listing.stderr
    wanted = [n for n in listing.stdout.split() if n.startswith("audit")] + ["keys/audit.pub"]
    proc = subprocess.run(
        [
            cluster.kubectl_path,
            f"--kubeconfig={cluster.layout.kubeconfig}",
            "-n",
            NAMESPACE,
            "exec",
            pod,
            "-c",
            "model",
            "--",
            "tar",
            "cf",
            "-",
            "-C",
            "/var/lib/ztml",
            *wanted,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as archive:
        members = archive.getmembers()
        assert all(
            not m.name.startswith("/")
            and ".." not in Path(m.name).parts
            and (m.isfile() or m.isdir())
            for m in members
        ), [m.name for m in members]
        archive.extractall(dest, members=members)  # noqa: S202 - checked above
    assert any((dest / "audit").rglob("*.jsonl")), "no audit segment was copied"
    return dest


def ztml_audit_verify(home: Path) -> subprocess.CompletedProcess[str]:
    """Run ``ztml audit verify`` on a copied home."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("ztml")), "audit", "verify"],
        env={**os.environ, "ZTML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def audit_events(cluster: Cluster, pod: str) -> list[dict[str, Any]]:
    """The audit events a model pod mirrored to its log (``{"audit_log", "seq", "event"}``)."""
    logs = cluster.kubectl("-n", NAMESPACE, "logs", pod, "-c", "model").stdout
    events = []
    for line in logs.splitlines():
        if line.startswith('{"audit_log"'):
            events.append(json.loads(line)["event"])
    return events


def extraction_plan(
    stack: ClusterStack, subject: str, *, seed: int, start: int
) -> list[dict[str, Any]]:
    """An extraction-style sequence: 45 small perturbations of three digits, 0.35 s apart."""
    rng = np.random.default_rng(seed)
    seeds = np.asarray(digit_rows(3, start=start))
    rows = [np.clip(seeds[i % 3] + rng.normal(0, 0.02, 64), 0, 1).tolist() for i in range(45)]
    token = stack.token(subject, roles=("predictor",))
    return [{**predict(token, [row]), "pause": 0.35} for row in rows]
