"""The pinned programs of the local cluster, built from the Go module proxy.

Each is a :class:`~service.toolchain.gobuild.PinnedBuild`, cached outside the checkout.
Kubernetes is built from the ``k8s.io/kubernetes`` module through a wrapper module that
points each of its staging modules at the published ``k8s.io/<name> v0.<minor>.<patch>``
release; the others through a plain wrapper module.

containerd, runc, the CNI plugins and the iptables tools come from Debian's packages
(:data:`DEBIAN_PACKAGES`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.cluster.errors import ClusterToolError
from service.toolchain.errors import ToolInstallError
from service.toolchain.gobuild import PinnedBuild, run_go, wrapper_build
from service.toolchain.opa import OPA_MODULE, OPA_VERSION
from service.toolchain.pulumi import ENGINE_BUILDS

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.17"
COREDNS_VERSION = "v1.14.7"
KUBE_ROUTER_VERSION = "v2.1.0"
PAUSE_VERSION = "1"
LOCAL_PATH_VERSION = "v0.0.30"

KUBERNETES_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
DEBIAN_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "ipset",
    "conntrack",
    "socat",
    "busybox-static",
    "debootstrap",
    "docker.io",
)
# The pause process of every pod sandbox: waits for a signal and exits on it.
PAUSE_SOURCE = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
"""


def _kubernetes_wrapper(workdir: Path) -> None:
    """Write the wrapper module that builds Kubernetes's commands from the proxy."""
    run_go(["go", "mod", "download", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], what="Kubernetes")
    proc = subprocess.run(
        [shutil.which("go") or "go", "env", "GOMODCACHE"],
        capture_output=True,
        text=True,
        check=True,
    )
    upstream = Path(proc.stdout.strip()) / f"k8s.io/kubernetes@{KUBERNETES_VERSION}" / "go.mod"
    staging = re.findall(r"^\s+(k8s\.io/\S+) => \./staging/", upstream.read_text(), re.MULTILINE)
    if not staging:
        raise ClusterToolError(f"no staging modules found in {upstream}")
    release = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    replaces = "\n".join(f"\t{module} => {module} {release}" for module in staging)
    go_line = re.search(r"^go (\S+)$", upstream.read_text(), re.MULTILINE)
    (workdir / "go.mod").write_text(
        "module ztml.local/kubernetes\n\n"
        f"go {go_line.group(1) if go_line else '1.24.0'}\n\n"
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\n"
        f"replace (\n{replaces}\n)\n"
    )
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{b}"' for b in KUBERNETES_BINARIES)
    (workdir / "tools.go").write_text(
        f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
    )
    run_go(["go", "mod", "tidy"], cwd=workdir, what="Kubernetes")


def _build_kubernetes(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ztml-k8s-") as tmp:
        workdir = Path(tmp)
        _kubernetes_wrapper(workdir)
        minor = KUBERNETES_VERSION.split(".")[1]
        ldflags = (
            "-s -w "
            f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} "
            f"-X k8s.io/component-base/version.gitMajor=1 "
            f"-X k8s.io/component-base/version.gitMinor={minor}"
        )
        packages = [f"k8s.io/kubernetes/cmd/{b}" for b in KUBERNETES_BINARIES]
        run_go(
            ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", f"{out}/", *packages],
            cwd=workdir,
            what="Kubernetes",
        )


def _build_pause(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ztml-pause-") as tmp:
        workdir = Path(tmp)
        (workdir / "go.mod").write_text("module ztml.local/pause\n\ngo 1.22\n")
        (workdir / "main.go").write_text(PAUSE_SOURCE)
        run_go(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "pause"), "."],
            cwd=workdir,
            what="the pause program",
        )


KUBERNETES = PinnedBuild("kubernetes", KUBERNETES_VERSION, KUBERNETES_BINARIES, _build_kubernetes)
ETCD = PinnedBuild(
    "etcd",
    ETCD_VERSION,
    ("etcd",),
    wrapper_build("go.etcd.io/etcd/server/v3", ETCD_VERSION, "go.etcd.io/etcd/server/v3", "etcd"),
)
COREDNS = PinnedBuild(
    "coredns",
    COREDNS_VERSION,
    ("coredns",),
    wrapper_build(
        "github.com/coredns/coredns", COREDNS_VERSION, "github.com/coredns/coredns", "coredns"
    ),
)
KUBE_ROUTER = PinnedBuild(
    "kube-router",
    KUBE_ROUTER_VERSION,
    ("kube-router",),
    wrapper_build(
        "github.com/cloudnativelabs/kube-router/v2",
        KUBE_ROUTER_VERSION,
        "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
        "kube-router",
    ),
)
PAUSE = PinnedBuild("pause", PAUSE_VERSION, ("pause",), _build_pause)
# The dynamic volume provisioner k3s ships (StorageClass ``local-path``), run as a host
# process like kube-router: claims bind to directories under the cluster's state directory.
LOCAL_PATH = PinnedBuild(
    "local-path-provisioner",
    LOCAL_PATH_VERSION,
    ("local-path-provisioner",),
    wrapper_build(
        "github.com/rancher/local-path-provisioner",
        LOCAL_PATH_VERSION,
        "github.com/rancher/local-path-provisioner",
        "local-path-provisioner",
    ),
)
# OPA's image holds only the binary: the pinned version built without cgo (static).
OPA_STATIC = PinnedBuild(
    "opa-static",
    OPA_VERSION,
    ("opa",),
    wrapper_build(OPA_MODULE, f"v{OPA_VERSION}", OPA_MODULE, "opa"),
)
ALL_BUILDS = (KUBERNETES, ETCD, COREDNS, KUBE_ROUTER, PAUSE, LOCAL_PATH)


def missing_debian_packages() -> list[str]:
    """Return the Debian packages the cluster needs that are not installed."""
    missing = []
    for package in DEBIAN_PACKAGES:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in proc.stdout:
            missing.append(package)
    return missing


def main(argv: list[str] | None = None) -> int:
    """``python -m service.cluster.tools [--missing-packages]``: used by ``scripts/run``.

    With ``--missing-packages`` print the Debian packages to install (one line); without,
    build every pinned binary that is not cached yet (the cluster's, the static OPA of its
    images, and the Pulumi engine that deploys onto it), saying which.
    """
    args = sys.argv[1:] if argv is None else argv
    if args == ["--missing-packages"]:
        print(" ".join(missing_debian_packages()))
        return 0
    # The Pulumi engine (CLI and Kubernetes provider) deploys onto this cluster: built here too.
    for build in (*ALL_BUILDS, OPA_STATIC, *ENGINE_BUILDS):
        if build.present():
            continue
        print(f"building {build.name} {build.version} into {build.directory}", flush=True)
        started = time.monotonic()
        try:
            build.ensure()
        except (ClusterToolError, ToolInstallError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"  built in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
