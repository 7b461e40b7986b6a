"""The local cluster under test: brought up once per session by ``ztml cluster up``.

A plugin of the whole suite (``pytest_plugins`` in tests/conftest.py): the cluster
tests and the system tests of the deployed stack share one cluster. The fixture runs
the real command (as root, as the README's test command does) and tears the cluster
down with ``ztml cluster down`` at the end of the session.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from service.cluster import node, tools
from service.cluster.layout import Layout
from service.toolchain.paths import PROJECT_ROOT

ZTML = str(Path(sys.executable).with_name("ztml"))
EXAMPLES = PROJECT_ROOT / "examples"


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


@dataclass(frozen=True)
class Example:
    """An example model package of examples/ and how the cluster home registers it.

    Attributes:
        directory: Its directory under examples/ (with train.py and model.py).
        name: Its contract's name (its Deployment's and Service's name in the stack).
        epsilon: The budget its evaluation attacks at: the deploy gate's for its modality.
        tenant: The tenant it is registered for.
        risk_tier: Its risk tier.
        max_batch: Its batch limit.
        explanations: Whether its callers may ask for explanations.
    """

    directory: str
    name: str
    epsilon: str
    tenant: str
    risk_tier: str
    max_batch: int
    explanations: bool = True


# Each in its own tenant, apart from the demo model's (demo) and from each other.
DIGITS_CNN = Example("digits_cnn", "digits-cnn", "0.1", "vision", "low", 32)
BREAST_CANCER = Example("breast_cancer", "breast-cancer", "0.05", "clinic", "high", 16)


@dataclass(frozen=True)
class ModelPackage:
    """A model package registered and approved in the cluster home.

    Attributes:
        example: What it is and how it was registered.
        path: The signed package directory.
        digest: Its weights digest (the ledger's model digest).
    """

    example: Example
    path: Path
    digest: str

    @property
    def name(self) -> str:
        """Its contract's name."""
        return self.example.name

    @property
    def tenant(self) -> str:
        """The tenant it was registered for."""
        return self.example.tenant


def _ztml(home: Path, *args: str, timeout: float = 900) -> str:
    proc = subprocess.run(
        [ZTML, *args],
        env={**os.environ, "ZTML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"ztml {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def cached_example(config: pytest.Config, directory: str, name: str, epsilon: str) -> Path:
    """``examples/<directory>`` trained by its train.py and evaluated at ``epsilon``, once.

    ``train.py`` (default settings) writes the package, ``ztml model evaluate --epsilon``
    its evaluation (about 3 minutes for the CNN, 1 for the tabular model, on two cores);
    both are cached by the example's source, unsigned: each home signs its own copy. The
    cluster tests and the local three-model stack test share the cache.
    """
    source = EXAMPLES / directory
    sources = hashlib.sha256(
        b"".join((source / n).read_bytes() for n in ("train.py", "model.py"))
    ).hexdigest()[:12]
    key = f"ztml-{name}-{epsilon}-{sources}"
    cache_provider = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    cache = (
        Path(cache_provider.mkdir(key))
        if cache_provider is not None
        else Path(tempfile.gettempdir()) / key
    )
    if (cache / "evaluation.json").is_file():
        return cache
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    train = subprocess.run(
        [sys.executable, str(source / "train.py"), "--out", str(cache / "package")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert train.returncode == 0, f"{source}/train.py failed:\n{train.stdout}\n{train.stderr}"
    evaluation = cache / "evaluation.partial"
    with tempfile.TemporaryDirectory(prefix="ztml-eval-") as home:
        _ztml(
            Path(home),
            "model",
            "evaluate",
            str(cache / "package"),
            "--epsilon",
            epsilon,
            "--out",
            str(evaluation),
        )
    evaluation.rename(cache / "evaluation.json")
    return cache


def install_example(home: Path, config: pytest.Config, example: Example) -> ModelPackage:
    """Sign, register and approve the (cached) trained example in ``home``, as its README does.

    ``home`` must hold the stack's keys (``ztml keys init``).
    """
    from service.app.gate import weights_file
    from service.ledger import hash_artifact

    cached = cached_example(config, example.directory, example.name, example.epsilon)
    package = home / "packages" / example.name
    shutil.copytree(cached / "package", package)
    _ztml(home, "model", "sign", str(package))
    _ztml(
        home,
        "model",
        "register",
        str(package),
        "--evaluation",
        str(cached / "evaluation.json"),
        "--tenant",
        example.tenant,
        "--risk-tier",
        example.risk_tier,
        "--max-batch",
        str(example.max_batch),
        "--explanations" if example.explanations else "--no-explanations",
    )
    digest, _ = hash_artifact(weights_file(package))
    _ztml(home, "ledger", "approve", digest, "--comment", "test: evaluation reviewed")
    return ModelPackage(example, package, digest)


@pytest.fixture(scope="session")
def model_packages(cluster_home: Path, pytestconfig: pytest.Config) -> tuple[ModelPackage, ...]:
    """examples/digits_cnn and examples/breast_cancer, approved in the cluster home.

    Each is trained, signed, evaluated at its modality's ε, registered for its own tenant
    and approved; the session's image bakes them in and its one-replica stack serves them.
    """
    return tuple(
        install_example(cluster_home, pytestconfig, e) for e in (DIGITS_CNN, BREAST_CANCER)
    )


@pytest.fixture(scope="session")
def stack_images(
    cluster: Cluster, cluster_home: Path, model_packages: tuple[ModelPackage, ...]
) -> dict[str, str]:
    """The model service (with the demo model and the example packages), OPA and PostgreSQL.

    Built and imported by ``ztml cluster images --model --package``.
    """
    from service.stack.provision import demo_model_dir

    proc = ztml_cluster(
        "images",
        "--model",
        str(demo_model_dir(cluster_home)),
        *(arg for package in model_packages for arg in ("--package", str(package.path))),
        timeout=3600,
    )
    assert proc.returncode == 0, f"ztml cluster images failed:\n{proc.stdout}\n{proc.stderr}"
    cluster.images = node.image_references(cluster.layout)
    return cluster.images
