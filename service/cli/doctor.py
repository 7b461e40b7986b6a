"""``ztml doctor``: report every tool and library ztml needs, where it is, and how to get it."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

import typer
from rich.console import Console
from rich.table import Table

from service.toolchain.errors import ToolMissingError
from service.toolchain.gotool import GoTool
from service.toolchain.opa import OPA
from service.toolchain.paths import ztml_home
from service.toolchain.postgres import find_postgres_bin
from service.toolchain.regal import REGAL


@dataclass(frozen=True)
class Check:
    """The outcome of looking for one tool or library."""

    name: str
    required: bool
    found: bool
    version: str
    where: str
    purpose: str
    how_to_get: str


def _run_version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).strip()
    match = re.search(r"v?(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match and proc.returncode == 0 else ""


def _binary(
    name: str, *, args: list[str], required: bool, purpose: str, how: str, exe: str | None = None
) -> Check:
    path = shutil.which(exe or name)
    version = _run_version([path, *args]) if path else ""
    return Check(name, required, bool(path), version, path or "-", purpose, how)


def _library(dist: str, purpose: str) -> Check:
    try:
        version = metadata.version(dist)
        dist_files = metadata.distribution(dist).locate_file("")
        return Check(dist, True, True, version, str(dist_files), purpose, "")
    except metadata.PackageNotFoundError:
        return Check(dist, True, False, "", "-", purpose, "run `scripts/run setup` (uv sync)")


def _go_tool(tool: GoTool, *, required: bool, purpose: str) -> Check:
    try:
        path = tool.find()
        return Check(tool.name, required, True, tool.version, str(path), purpose, "")
    except ToolMissingError as err:
        return Check(tool.name, required, False, "", "-", purpose, str(err))


def _postgres() -> Check:
    purpose = "shared ledger backend for several replicas (the test setup starts one)"
    how = "apt-get install postgresql (Debian/Ubuntu); `scripts/run test` installs it"
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        return Check("postgresql", False, False, "", "-", purpose, how)
    version = _run_version([str(bin_dir / "postgres"), "--version"])
    return Check("postgresql", False, True, version, str(bin_dir), purpose, how)


def _docker_engine() -> Check:
    purpose = "builds the service image for k3d or a registry (infra/image)"
    how = "install Docker Engine (Debian: apt-get install docker.io) and start dockerd"
    client = shutil.which("docker")
    if client is None:
        return Check("docker engine", False, False, "", "-", purpose, how)
    version = _run_version([client, "info", "--format", "{{.ServerVersion}}"])
    where = client if version else f"{client} (client only: no engine is running)"
    return Check("docker engine", False, bool(version), version, where, purpose, how)


def _kube_cluster() -> Check:
    purpose = "target of `pulumi up` and of the Kubernetes testinfra suite"
    how = "create one with `k3d cluster create ztml` (see README) or set a kubeconfig context"
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return Check("kubernetes cluster", False, False, "", "-", purpose, how)
    try:
        proc = subprocess.run(
            [kubectl, "config", "current-context"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return Check("kubernetes cluster", False, False, "", "-", purpose, how)
    context = proc.stdout.strip()
    if proc.returncode != 0 or not context:
        return Check("kubernetes cluster", False, False, "", "-", purpose, how)
    return Check("kubernetes cluster", False, True, "", f"context {context}", purpose, how)


def collect() -> list[Check]:
    """Look for every tool and library ztml uses and return one check each."""
    py_ok = sys.version_info[:2] == (3, 11)
    checks = [
        Check(
            "python",
            True,
            py_ok,
            platform.python_version(),
            sys.executable,
            "runs the CLI, the service and the Pulumi program (3.11 required)",
            "install CPython 3.11 (uv python install 3.11)",
        ),
        _go_tool(
            OPA,
            required=True,
            purpose="policy engine: authorizes every call, admission checks, deploy gate",
        ),
        _go_tool(
            REGAL,
            required=False,
            purpose="Rego linter for policy authors (the test command lints policies/ with it)",
        ),
        _binary(
            "go",
            args=["version"],
            required=False,
            purpose="builds the pinned OPA binary when it is missing",
            how="install Go from https://go.dev/dl/ or your package manager",
        ),
        _postgres(),
        _docker_engine(),
        _binary(
            "pulumi CLI",
            exe="pulumi",
            args=["version"],
            required=False,
            purpose="`pulumi up` provisions the stack on k3d or a cloud cluster",
            how="install from https://www.pulumi.com/docs/install/ (not needed for `ztml up`)",
        ),
        _binary(
            "kubectl",
            args=["version", "--client"],
            required=False,
            purpose="talks to the cluster; testinfra's kubectl backend uses it",
            how="install from https://kubernetes.io/docs/tasks/tools/",
        ),
        _binary(
            "k3d",
            args=["version"],
            required=False,
            purpose="runs a local Kubernetes (k3s in Docker) for the cluster path",
            how="install from https://k3d.io (needs a Docker engine)",
        ),
        _kube_cluster(),
    ]
    libraries = {
        "bentoml": "serves the model (HTTP API, workers)",
        "torch": "runs and hardens the model",
        "captum": "explanations (Integrated Gradients)",
        "scikit-learn": "bundled digits data set",
        "pulumi": "Pulumi program SDK",
        "pulumi-kubernetes": "Kubernetes resources for `pulumi up`",
        "cryptography": "Ed25519 signatures of ledger and audit records",
        "rfc8785": "canonical JSON (JCS) for hashed and signed records",
        "model-signing": "OMS model signatures (`ztml model sign`, verified before serving)",
        "pyjwt": "verifies and issues JWTs",
        "psycopg": "PostgreSQL ledger backend",
        "pytest-testinfra": "checks provisioned stacks",
    }
    checks.extend(_library(dist, purpose) for dist, purpose in libraries.items())
    return checks


def doctor() -> None:
    """Check every required and optional tool and library, and say how to get what is missing.

    Exits non-zero when a required one is missing. Optional ones (Go, PostgreSQL, Docker,
    the Pulumi CLI, kubectl, k3d, a Kubernetes cluster) are only needed for the cluster
    path or for installing OPA.
    """
    console = Console()
    table = Table(title="ztml doctor", show_lines=False)
    for column in ("tool", "kind", "status", "version", "where / how to get it", "needed for"):
        table.add_column(column, overflow="fold")
    missing_required = []
    for check in collect():
        kind = "required" if check.required else "optional"
        if check.found:
            status, where = "[green]ok[/green]", check.where
        else:
            status = "[red]missing[/red]" if check.required else "[yellow]missing[/yellow]"
            where = check.how_to_get
            if check.required:
                missing_required.append(check.name)
        table.add_row(check.name, kind, status, check.version or "-", where, check.purpose)
    console.print(table)
    console.print(f"State directory: {ztml_home()} (set ZTML_HOME to change it)")
    if missing_required:
        console.print(f"[red]Missing required: {', '.join(missing_required)}[/red]")
        raise typer.Exit(code=1)
    console.print("[green]Everything required is present.[/green]")
