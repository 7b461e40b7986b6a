"""The ztml stack deployed onto the local cluster by the real Pulumi engine.

A plugin of the whole suite (``pytest_plugins`` in tests/conftest.py). The session
fixture :func:`cluster_stack` does what the README's cluster section says: the demo
model's home makes the configuration (``ztml cluster config``), and
``python -m infra.automation up`` runs the program under the pinned Pulumi CLI and
pulumi-kubernetes provider against the cluster's kubeconfig, with a file backend and a
passphrase secrets provider in a temporary directory. Nothing of ours is mocked. The
test marked ``stack_destroy`` destroys it; otherwise the fixture does at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.stack.provision import demo_model_dir
from tests.service.cluster.fixtures import Cluster, ModelPackage, ztml_cluster

NAMESPACE = "ztml"
WORKLOAD = "ztml-model"
MODEL_SELECTOR = "app.kubernetes.io/name=ztml-model"
PASSPHRASE = "local-cluster-test-passphrase"


@dataclass
class ClusterStack:
    """A stack the engine deployed: how to run the engine on it, and what it made."""

    cluster: Cluster
    home: Path
    workdir: Path
    config_file: Path
    up_seconds: float = 0.0
    destroyed: bool = False

    @property
    def env(self) -> dict[str, str]:
        """The engine's environment: the cluster's kubeconfig, the stack's passphrase."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.cluster.layout.kubeconfig),
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "ZTML_HOME": str(self.home),
        }

    def engine(
        self, action: str, *, config_file: Path | None = None, stack: str = "local"
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m infra.automation ACTION`` on this stack (or another config)."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "infra.automation",
                action,
                "--stack",
                stack,
                "--backend",
                str(self.workdir / "backend"),
                "--config",
                str(config_file or self.config_file),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )

    def config(self) -> dict[str, Any]:
        """The stack's ``ztml:*`` configuration."""
        loaded: dict[str, Any] = json.loads(self.config_file.read_text())
        return loaded

    def scale(self, replicas: int) -> None:
        """Set the stack's replicas (and the autoscaler's maximum) in its configuration.

        The rest of the configuration is kept: a new ``ztml cluster config`` would make a
        new PostgreSQL password, which the running PostgreSQL would not accept.
        """
        values = self.config()
        values["ztml:replicas"] = str(replicas)
        values["ztml:maxReplicas"] = str(replicas)
        self.config_file.write_text(json.dumps(values, indent=2))

    def model_pods(self) -> list[str]:
        """Names of the model service's running pods."""
        proc = self.cluster.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            MODEL_SELECTOR,
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        )
        return proc.stdout.split()

    def token(self, sub: str, **claims: Any) -> str:
        """A token from the home's issuer, which the deployed stack trusts."""
        from tests.service.app.harness import token

        return token(self.home, sub, **claims)


def engine_changes(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The change summary ``infra.automation`` prints as its last line."""
    last = proc.stdout.strip().splitlines()[-1]
    changes: dict[str, int] = json.loads(last)["changes"]
    return changes


def deploy_stack(
    cluster: Cluster,
    home: Path,
    workdir: Path,
    *,
    replicas: int = 1,
    packages: tuple[ModelPackage, ...] = (),
) -> ClusterStack:
    """``ztml cluster config`` for the demo model (and packages), then ``up`` (real engine)."""
    config_file = workdir / "local-stack.json"
    configure(home, config_file, replicas=replicas, packages=packages)
    stack = ClusterStack(cluster, home, workdir, config_file)
    started = time.monotonic()
    up = stack.engine("up")
    stack.up_seconds = time.monotonic() - started
    if up.returncode != 0:
        described = cluster.kubectl("-n", NAMESPACE, "describe", "pods").stdout[-4000:]
        stack.engine("destroy")
        pytest.fail(f"pulumi up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}\n{described}")
    return stack


def configure(
    home: Path, config_file: Path, *, replicas: int, packages: tuple[ModelPackage, ...] = ()
) -> None:
    """Write the stack's configuration with ``ztml cluster config`` (``--package`` each)."""
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("ztml")),
            "cluster",
            "config",
            "--model",
            str(demo_model_dir(home)),
            "--replicas",
            str(replicas),
            *(arg for package in packages for arg in ("--package", str(package.path))),
            "--out",
            str(config_file),
        ],
        env={**os.environ, "ZTML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"ztml cluster config failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="session")
def cluster_stack(
    cluster: Cluster,
    stack_images: dict[str, str],
    cluster_home: Path,
    model_packages: tuple[ModelPackage, ...],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterStack]:
    """The one-replica stack, deployed once per session by ``up`` under the real engine.

    It serves the demo model and, each in its own Deployment (``ztml:models``), the
    examples/digits_cnn and examples/breast_cancer packages.
    """
    stack = deploy_stack(
        cluster,
        cluster_home,
        tmp_path_factory.mktemp("cluster-stack"),
        packages=model_packages,
    )
    yield stack
    if not stack.destroyed:
        stack.engine("destroy")


__all__ = [
    "ClusterStack",
    "cluster_stack",
    "configure",
    "deploy_stack",
    "engine_changes",
    "ztml_cluster",
]
