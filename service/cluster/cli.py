"""``ztml cluster up|down|status``: a local single-node Kubernetes without Docker or k3d.

Needs root (it runs containerd, kubelet and changes iptables). The first ``up`` on a
machine builds the pinned Kubernetes, etcd, CoreDNS and kube-router from the Go module
proxy into ``~/.cache/ztml`` (a few minutes on two cores); later ones start in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from service.cluster import network, node
from service.cluster.errors import ClusterError
from service.cluster.layout import Layout

app = typer.Typer(
    help=(
        "A local single-node Kubernetes built from upstream parts (needs root).\n\n"
        "`up` starts etcd, the control plane, containerd, kubelet, kube-proxy, kube-router "
        "(NetworkPolicy) and CoreDNS, and prints the kubeconfig to use; `down` stops them "
        "and removes every trace; `status` shows what runs. State lives in "
        "$ZTML_CLUSTER_DIR (default /var/lib/ztml-cluster)."
    ),
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _print_access(layout: Layout) -> None:
    console.print(f"kubeconfig: {layout.kubeconfig}")
    console.print(f"context:    {node.context_name()}")
    kubectl = node.tools.KUBERNETES.path("kubectl")
    console.print(f"kubectl:    {kubectl}")
    console.print(
        f"try:        KUBECONFIG={layout.kubeconfig} {kubectl} get nodes", highlight=False
    )


@app.command()
def up() -> None:
    """Start the cluster (idempotent: a running, Ready cluster is left as it is)."""
    layout = Layout.default()
    try:
        with console.status("starting the local cluster") as status:
            started = node.up(layout, lambda message: status.update(message))
    except ClusterError as err:
        raise _fail(str(err)) from None
    console.print("cluster started" if started else "cluster already running: nothing to do")
    _print_access(layout)


@app.command("images")
def build_images(
    model: Annotated[
        Path | None,
        typer.Option(
            help="Directory with the approved model artifact to bake into the service image "
            "(served from /opt/ztml/model).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    package: Annotated[
        list[Path] | None,
        typer.Option(
            help="A further approved model package to bake in (served from "
            "/opt/ztml/models/<its name>); repeat it for several.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Build the model service, OPA and PostgreSQL images and import them into the cluster.

    The service image comes from the repository's Dockerfile on a Debian base made with
    debootstrap; nothing is pulled from a registry. Unchanged inputs are not rebuilt. Prints
    each image's digest reference (what the stack config pins).
    """
    layout = Layout.default()
    try:
        with console.status("building images") as status:
            refs = node.import_stack_images(
                layout,
                lambda message: status.update(message),
                model_dir=model,
                packages=package or (),
            )
    except ClusterError as err:
        raise _fail(str(err)) from None
    for name, ref in refs.items():
        console.print(f"{name:<14} {ref}", highlight=False)


@app.command("config")
def stack_config(
    model: Annotated[
        Path | None,
        typer.Option(
            help="The approved model's directory (the one given to `ztml cluster images`); "
            "its model.safetensors names the digest.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    model_digest: Annotated[
        str | None,
        typer.Option(help="The approved model's digest, instead of --model."),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(help="Where to write the configuration (JSON of ztml:* keys)."),
    ] = Path(".ztml/local-stack.json"),
    replicas: Annotated[int, typer.Option(min=1, max=20, help="Model service replicas.")] = 1,
    package: Annotated[
        list[Path] | None,
        typer.Option(
            help="A further model package baked in with `ztml cluster images --package`: "
            "served by its own Deployment (ztml:models); repeat it for several.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Write the stack configuration that deploys ztml onto this cluster.

    It is Pulumi.k3d.yaml with every placeholder filled: the images `ztml cluster images`
    imported, the model digest, the public keys of $ZTML_HOME/keys, a verified ledger
    export written beside it (ledger-export.json), and the admission webhook's settings
    (this node's addresses, a serving certificate from the local CA in
    $ZTML_HOME/cluster-ca; the file is 0600, it holds that certificate's key), and with
    --package each further model's name and digest (`ztml:models`). Deploy it with
    `python -m infra.automation up --stack local --backend .ztml/pulumi --config FILE`.
    """
    if model is not None and model_digest is None:
        from service.ledger import hash_artifact

        weights = model / "model.safetensors"
        if not weights.is_file():
            raise _fail(f"{weights} does not exist: --model names the model's directory.")
        digest, _ = hash_artifact(weights)
    elif model_digest is not None and model is None:
        digest = model_digest
    else:
        raise _fail("give the model as --model DIR or --model-digest sha256:<hex> (one of them).")
    from service.cluster.stackconfig import (
        dump,
        local_stack_config,
        package_models,
        write_ledger_export,
    )
    from service.toolchain.paths import ztml_home

    layout = Layout.default()
    home = ztml_home()
    export = out.resolve().parent / "ledger-export.json"
    try:
        write_ledger_export(home, export)
        config = local_stack_config(
            home,
            node.image_references(layout),
            model_digest=digest,
            ledger_export=export,
            replicas=replicas,
            models=package_models(package or ()),
        )
    except ClusterError as err:
        raise _fail(str(err)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.chmod(0o600)  # with replicas > 1 it holds PostgreSQL's password
    out.write_text(dump(config))
    console.print(f"wrote {out} and {export}")


@app.command()
def down() -> None:
    """Stop the cluster and remove its processes, pods, mounts, network rules and state."""
    if os.geteuid() != 0:
        raise _fail("the local cluster needs root (run `sudo ztml cluster down`).")
    layout = Layout.default()
    with console.status("stopping the local cluster") as status:
        node.down(layout, lambda message: status.update(message))
    left = network.leftovers()
    if left:
        raise _fail("stopped, but these remain: " + ", ".join(left))
    console.print("cluster removed")


@app.command()
def status() -> None:
    """Show each component's PID, whether the node is Ready, and how to reach the cluster."""
    layout = Layout.default()
    states = node.states(layout)
    for state in states:
        shown = f"running (pid {state.pid})" if state.pid else "[red]stopped[/red]"
        console.print(f"{state.name:<24} {shown}")
    running = all(s.pid for s in states)
    ready = running and node.node_ready(layout)
    console.print(f"node {'Ready' if ready else 'not Ready'}")
    if running:
        _print_access(layout)
    if not ready:
        raise typer.Exit(1)
