"""The local cluster under test: brought up once per session by ``ztml cluster up``.

A plugin of the whole suite (``pytest_plugins`` in tests/conftest.py): the cluster
tests and the system tests of the deployed stack share one cluster. The fixture runs
the real command (as root, as the README's test command does) and tears the cluster
down with ``ztml cluster down`` at the end of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from service.cluster import node, tools
from service.cluster.layout import Layout

ZTML = str(Path(sys.executable).with_name("ztml"))


def pytest_configure(config: pytest.Config) -> None:
    """Put the pinned kubectl first on PATH (testinfra's kubectl:// backend runs `kubectl`)."""
    kubectl = tools.KUBERNETES.path("kubectl")
    if kubectl.exists():
        os.environ["PATH"] = f"{kubectl.parent}{os.pathsep}{os.environ.get('PATH', '')}"


def ztml_cluster(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``ztml cluster ...`` and return the finished process."""
    return subprocess.run(
        [ZTML, "cluster", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Cluster:
    """A running local cluster and a kubectl bound to its administrator."""

    layout: Layout
    images: dict[str, str] = field(default_factory=dict)

    @property
    def kubectl_path(self) -> str:
        """Return the pinned kubectl."""
        return str(tools.KUBERNETES.path("kubectl"))

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the cluster's administrator."""
        return subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.layout.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def apply(self, *documents: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` the documents; return the process (the caller checks it)."""
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(documents)})
        return self.kubectl("apply", "-f", "-", stdin=body)

    def wait_ready(self, namespace: str, *pods: str, timeout: int = 90) -> None:
        """Wait until every named pod is Ready, or fail with its description."""
        proc = self.kubectl(
            "-n",
            namespace,
            "wait",
            "--for=condition=Ready",
            *[f"pod/{p}" for p in pods],
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )
        if proc.returncode != 0:
            described = self.kubectl("-n", namespace, "describe", "pod", *pods).stdout
            pytest.fail(f"pods {pods} not Ready: {proc.stderr}\n{described[-3000:]}")

    def exec(self, namespace: str, pod: str, *command: str) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in ``pod`` through the API server and kubelet."""
        return self.kubectl("-n", namespace, "exec", pod, "--", *command)

    def run_to_completion(self, namespace: str, pod: dict[str, Any], timeout: int = 180) -> str:
        """Create ``pod`` (restartPolicy Never), wait for it to succeed, return its log."""
        name = pod["metadata"]["name"]
        pod = {
            **pod,
            "metadata": {**pod["metadata"], "namespace": namespace},
            "spec": {**pod["spec"], "restartPolicy": "Never"},
        }
        proc = self.apply(pod)
        assert proc.returncode == 0, proc.stderr
        done = self.kubectl(
            "-n",
            namespace,
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            f"pod/{name}",
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )
        log = self.kubectl("-n", namespace, "logs", name).stdout
        described = (
            ""
            if done.returncode == 0
            else self.kubectl("-n", namespace, "describe", "pod", name).stdout[-2000:]
        )
        assert done.returncode == 0, f"{name} did not succeed: {done.stderr}\n{log}\n{described}"
        return log

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Create (or keep) a namespace with ``labels``; return its name."""
        proc = self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels or {}},
            }
        )
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 30
        # The namespace's default ServiceAccount is created asynchronously; pods need it.
        while self.kubectl("-n", name, "get", "serviceaccount", "default").returncode != 0:
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
            time.sleep(0.5)
        return name


def restricted_pod(
    name: str,
    image: str,
    *,
    labels: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Return a pod that the restricted Pod Security Standard admits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command or ["sleep", "3600"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                    "resources": {"limits": {"memory": "32Mi", "cpu": "100m"}},
                }
            ],
        },
    }


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local cluster, started by ``ztml cluster up`` and removed at the end."""
    if os.geteuid() != 0:
        pytest.fail("the local-cluster tests need root, as `ztml cluster up` does")
    proc = ztml_cluster("up")
    assert proc.returncode == 0, f"ztml cluster up failed:\n{proc.stdout}\n{proc.stderr}"
    layout = Layout.default()
    yield Cluster(layout=layout, images=node.image_references(layout))
    down = ztml_cluster("down", timeout=300)
    assert down.returncode == 0, f"ztml cluster down failed:\n{down.stdout}\n{down.stderr}"


@pytest.fixture(scope="session")
def cluster_home(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A ZTML_HOME with keys, a token issuer and the tests' demo model registered and approved.

    Its model directory is baked into the service image; its ledger and keys make the
    deployed stack's configuration.
    """
    from tests.service.app.harness import cached_demo_model, install_demo_model

    home = tmp_path_factory.mktemp("cluster-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZTML_HOME", str(home))
        install_demo_model(home, cached_demo_model(pytestconfig))
    return home


@pytest.fixture(scope="session")
def stack_images(cluster: Cluster, cluster_home: Path) -> dict[str, str]:
    """The model service (with the demo model), OPA and PostgreSQL images.

    Built and imported by ``ztml cluster images --model``.
    """
    from service.stack.provision import demo_model_dir

    proc = ztml_cluster("images", "--model", str(demo_model_dir(cluster_home)), timeout=3600)
    assert proc.returncode == 0, f"ztml cluster images failed:\n{proc.stdout}\n{proc.stderr}"
    cluster.images = node.image_references(cluster.layout)
    return cluster.images
