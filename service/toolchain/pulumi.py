"""The pinned Pulumi engine: the CLI and the Kubernetes provider, built from the Go module proxy.

Users with the official Pulumi CLI run ``pulumi up`` as usual; these builds let ztml run
the real engine where the official release binaries cannot be downloaded (its tests run
the program through the Automation API with an inline program, since the Python language
host is not published as a Go module).

The provider is the ``provider/v4`` module at the commit of release 4.25.0 (the only form
the Go module proxy serves). Its ``main`` embeds the package schema with its version set and
the Terraform mapping, which upstream generates before building; :func:`_build_provider`
does the same from the files the module ships. The Python SDK is pinned to the same
release in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from service.toolchain.errors import ToolInstallError
from service.toolchain.gobuild import PinnedBuild, run_go

PULUMI_VERSION = "v3.276.0"
PULUMI_MODULE = "github.com/pulumi/pulumi/pkg/v3"
# pkg's own replace directive, which a wrapper module must repeat.
PULUMI_REPLACES = {
    "github.com/atotto/clipboard": "github.com/tgummerer/clipboard "
    "v0.0.0-20241001131231-d02d263e614e"
}
KUBERNETES_PROVIDER_RELEASE = "4.25.0"
KUBERNETES_PROVIDER_MODULE = "github.com/pulumi/pulumi-kubernetes/provider/v4"
KUBERNETES_PROVIDER_COMMIT = "v4.0.0-20260115033456-f47bc2d6f199"


def _build_cli(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ztml-pulumi-") as tmp:
        workdir = Path(tmp)
        replaces = "\n".join(f"\t{old} => {new}" for old, new in PULUMI_REPLACES.items())
        (workdir / "go.mod").write_text(
            "module ztml.local/pulumi\n\ngo 1.24.0\n\n"
            f"require {PULUMI_MODULE} {PULUMI_VERSION}\n\nreplace (\n{replaces}\n)\n"
        )
        package = f"{PULUMI_MODULE}/cmd/pulumi"
        (workdir / "tools.go").write_text(
            f'//go:build tools\n\npackage tools\n\nimport _ "{package}"\n'
        )
        run_go(["go", "mod", "tidy"], cwd=workdir, what="the Pulumi CLI")
        ldflags = (
            f"-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version={PULUMI_VERSION}"
        )
        (out / "bin").mkdir()
        run_go(
            ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(out / "bin"), package],
            cwd=workdir,
            what="the Pulumi CLI",
        )


def _module_dir(module: str, version: str) -> Path:
    go = shutil.which("go") or "go"
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    if proc.returncode != 0:
        raise ToolInstallError(f"downloading {module}@{version} failed: {proc.stderr.strip()}")
    return Path(json.loads(proc.stdout)["Dir"])


def _build_provider(out: Path) -> None:
    source = _module_dir(KUBERNETES_PROVIDER_MODULE, KUBERNETES_PROVIDER_COMMIT)
    with tempfile.TemporaryDirectory(prefix="ztml-pulumi-kubernetes-") as tmp:
        workdir = Path(tmp) / "provider"
        shutil.copytree(source, workdir)
        for path in workdir.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        go_mod = workdir / "go.mod"
        # The module replaces its SDK with a sibling directory the module zip lacks; the
        # published SDK it requires serves the same packages.
        go_mod.write_text(
            re.sub(r"^replace \S+/sdk/v4 => \.\./sdk\n", "", go_mod.read_text(), flags=re.M)
        )
        cmd = workdir / "cmd" / "pulumi-resource-kubernetes"
        schema = json.loads((cmd / "schema.json").read_text())
        schema["version"] = KUBERNETES_PROVIDER_RELEASE
        (cmd / "schema-embed.json").write_text(json.dumps(schema, separators=(",", ":")))
        mapping = json.loads((cmd / "terraform-mapping.json").read_text())
        (cmd / "terraform-mapping-embed.json").write_text(
            json.dumps(mapping, separators=(",", ":"))
        )
        ldflags = (
            "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version="
            f"{KUBERNETES_PROVIDER_RELEASE}"
        )
        run_go(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                ldflags,
                "-o",
                str(out / "pulumi-resource-kubernetes"),
                "./cmd/pulumi-resource-kubernetes",
            ],
            cwd=workdir,
            what="the Pulumi Kubernetes provider",
        )


PULUMI_CLI = PinnedBuild("pulumi", PULUMI_VERSION, ("bin/pulumi",), _build_cli)
KUBERNETES_PROVIDER = PinnedBuild(
    "pulumi-kubernetes",
    KUBERNETES_PROVIDER_RELEASE,
    ("pulumi-resource-kubernetes",),
    _build_provider,
)
ENGINE_BUILDS = (PULUMI_CLI, KUBERNETES_PROVIDER)


def engine_path() -> str:
    """Return a ``PATH`` that finds the pinned CLI and provider first (build them if missing).

    Raises:
        ToolInstallError: a build failed.
    """
    dirs = []
    for build in ENGINE_BUILDS:
        build.ensure()
        dirs.append(str(Path(build.path(build.binaries[0])).parent))
    return os.pathsep.join([*dirs, os.environ.get("PATH", "")])
