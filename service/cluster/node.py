"""Start, check and stop the local cluster's processes.

Each component is a host process started in its own session, logged to
``log/<name>.log`` and recorded in ``run/<name>.pid``; a PID counts as ours only while
its command line still names the binary we started. ``up`` is idempotent: with every
component alive and the node Ready it does nothing; after a crash it stops what is left
and starts everything again on the kept state (certificates, etcd's data). ``down``
stops every recorded process and every pod, unmounts what they mounted, removes the
network they made and deletes the state directory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.cluster import addons, configs, imagebuild, images, network, pki, tools
from service.cluster.errors import ClusterStartError, ClusterToolError
from service.cluster.layout import (
    API_PORT,
    API_SERVICE_IP,
    CONTEXT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    NODE_NAME,
    POD_CIDR,
    SERVICE_CIDR,
    Layout,
    node_ip,
)
from service.toolchain.errors import ToolInstallError
from service.toolchain.gobuild import cache_root

Progress = Callable[[str], None]
CGROUP_ROOT = Path("/sys/fs/cgroup")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Component:
    """One process of the cluster: its name and full command line."""

    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class ComponentState:
    """Whether a component runs, and its PID if it does."""

    name: str
    pid: int | None


def _binary(build: tools.PinnedBuild, name: str) -> str:
    return str(build.path(name))


def components(layout: Layout, ip: str) -> list[Component]:
    """Return the cluster's processes in start order (stop order is the reverse)."""
    pk, epk, cfg = layout.pki, layout.etcd_pki, layout.config
    etcd_url = f"https://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer_url = f"https://127.0.0.1:{ETCD_PEER_PORT}"
    kube = tools.KUBERNETES
    return [
        Component(
            "etcd",
            (
                _binary(tools.ETCD, "etcd"),
                "--name=ztml",
                f"--data-dir={layout.etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=ztml={peer_url}",
                "--listen-metrics-urls=http://127.0.0.1:2381",
                f"--cert-file={epk / 'etcd-server.crt'}",
                f"--key-file={epk / 'etcd-server.key'}",
                f"--trusted-ca-file={epk / 'etcd-ca.crt'}",
                "--client-cert-auth=true",
                f"--peer-cert-file={epk / 'etcd-server.crt'}",
                f"--peer-key-file={epk / 'etcd-server.key'}",
                f"--peer-trusted-ca-file={epk / 'etcd-ca.crt'}",
                "--peer-client-cert-auth=true",
                "--snapshot-count=10000",
            ),
        ),
        Component(
            "kube-apiserver",
            (
                _binary(kube, "kube-apiserver"),
                f"--advertise-address={ip}",
                f"--bind-address={ip}",
                f"--secure-port={API_PORT}",
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={epk / 'etcd-ca.crt'}",
                f"--etcd-certfile={epk / 'apiserver-etcd-client.crt'}",
                f"--etcd-keyfile={epk / 'apiserver-etcd-client.key'}",
                f"--tls-cert-file={pk / 'apiserver.crt'}",
                f"--tls-private-key-file={pk / 'apiserver.key'}",
                "--tls-min-version=VersionTLS12",
                f"--client-ca-file={pk / 'ca.crt'}",
                f"--kubelet-client-certificate={pk / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pk / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pk / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--anonymous-auth=false",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=false",
                "--profiling=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pk / 'service-account.pub'}",
                f"--service-account-signing-key-file={pk / 'service-account.key'}",
                f"--encryption-provider-config={cfg / 'encryption.json'}",
                f"--audit-policy-file={cfg / 'audit-policy.json'}",
                f"--audit-log-path={layout.audit_log}",
                "--audit-log-maxsize=50",
                "--audit-log-maxbackup=2",
            ),
        ),
        Component(
            "kube-controller-manager",
            (
                _binary(kube, "kube-controller-manager"),
                f"--kubeconfig={cfg / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={cfg / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={cfg / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pk / 'service-account.key'}",
                f"--root-ca-file={pk / 'ca.crt'}",
                f"--cluster-signing-cert-file={pk / 'ca.crt'}",
                f"--cluster-signing-key-file={pk / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-cidr={POD_CIDR}",
                "--profiling=false",
            ),
        ),
        Component(
            "kube-scheduler",
            (
                _binary(kube, "kube-scheduler"),
                f"--kubeconfig={cfg / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={cfg / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={cfg / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--profiling=false",
            ),
        ),
        Component("containerd", ("/usr/bin/containerd", f"--config={cfg / 'containerd.toml'}")),
        Component(
            "kubelet",
            (
                _binary(kube, "kubelet"),
                f"--config={cfg / 'kubelet.json'}",
                f"--kubeconfig={cfg / 'kubelet.kubeconfig'}",
                f"--root-dir={layout.kubelet}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={ip}",
            ),
        ),
        Component(
            "kube-proxy",
            (_binary(kube, "kube-proxy"), f"--config={cfg / 'kube-proxy.json'}"),
        ),
        Component(
            "kube-router",
            (
                _binary(tools.KUBE_ROUTER, "kube-router"),
                f"--kubeconfig={cfg / 'kube-router.kubeconfig'}",
                f"--hostname-override={NODE_NAME}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                "--health-port=20244",
                "--metrics-port=0",
            ),
        ),
        Component(
            "local-path-provisioner",
            (
                _binary(tools.LOCAL_PATH, "local-path-provisioner"),
                "start",
                f"--kubeconfig={cfg / 'local-path-provisioner.kubeconfig'}",
                f"--config={cfg / 'local-path.json'}",
                f"--helper-pod-file={cfg / 'local-path-helper-pod.yaml'}",
                f"--namespace={addons.LOCAL_PATH_NAMESPACE}",
                f"--configmap-name={addons.LOCAL_PATH_CONFIG_MAP}",
                f"--service-account-name={addons.LOCAL_PATH_HELPER_ACCOUNT}",
                f"--provisioner-name={addons.LOCAL_PATH_PROVISIONER}",
            ),
        ),
    ]


def make_pki(layout: Layout, ip: str) -> None:
    """Create (or keep) both CAs and every component's certificate."""
    kube_ca = pki.Authority(layout.pki, "ca")
    etcd_ca = pki.Authority(layout.etcd_pki, "etcd-ca")
    kube_ca.ensure()
    etcd_ca.ensure()
    etcd_ca.issue(
        pki.Identity(
            "etcd-server", "etcd", server=True, client=True, hosts=("127.0.0.1", "localhost")
        )
    )
    etcd_ca.issue(pki.Identity("apiserver-etcd-client", "kube-apiserver-etcd-client"))
    kube_ca.issue(
        pki.Identity(
            "apiserver",
            "kube-apiserver",
            server=True,
            hosts=(
                ip,
                "127.0.0.1",
                API_SERVICE_IP,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
    )
    kube_ca.issue(
        pki.Identity(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
        )
    )
    kube_ca.issue(pki.Identity("kubelet", NODE_NAME, server=True, hosts=(ip, NODE_NAME)))
    for name, cn, groups in (
        ("admin", "ztml-admin", ("system:masters",)),
        ("controller-manager", "system:kube-controller-manager", ()),
        ("scheduler", "system:kube-scheduler", ()),
        ("kubelet-client", f"system:node:{NODE_NAME}", ("system:nodes",)),
        ("kube-proxy", "system:kube-proxy", ()),
        ("kube-router", addons.KUBE_ROUTER_USER, ()),
        ("local-path-provisioner", addons.LOCAL_PATH_USER, ()),
    ):
        kube_ca.issue(pki.Identity(name, cn, groups))
    pki.service_account_keys(layout.pki)


def write_configs(layout: Layout, ip: str, *, sandbox_image: str, helper_image: str) -> None:
    """Render every component's configuration and kubeconfig."""
    server = configs.api_server_url(ip)
    for name, cert in (
        ("admin", "admin"),
        ("controller-manager", "controller-manager"),
        ("scheduler", "scheduler"),
        ("kubelet", "kubelet-client"),
        ("kube-proxy", "kube-proxy"),
        ("kube-router", "kube-router"),
        ("local-path-provisioner", "local-path-provisioner"),
    ):
        configs.kubeconfig(
            layout,
            name=name,
            server=server,
            cert=layout.pki / f"{cert}.crt",
            key=layout.pki / f"{cert}.key",
        )
    configs.encryption_config(layout)
    configs.audit_policy(layout)
    configs.containerd_config(layout, sandbox_image=sandbox_image)
    configs.cni_config(layout)
    configs.kubelet_config(
        layout, tls_cert=layout.pki / "kubelet.crt", tls_key=layout.pki / "kubelet.key"
    )
    configs.kube_proxy_config(
        layout, kubeconfig_path=layout.config / "kube-proxy.kubeconfig", node_name=NODE_NAME
    )
    layout.volumes.mkdir(mode=0o755, parents=True, exist_ok=True)
    (layout.config / "local-path.json").write_text(addons.local_path_config(str(layout.volumes)))
    (layout.config / "local-path-helper-pod.yaml").write_text(
        addons.local_path_helper_pod(helper_image)
    )


# ---- processes -----------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running_pid(layout: Layout, component: Component) -> int | None:
    """Return the component's PID if its recorded process still runs its binary."""
    try:
        pid = int(layout.pid_file(component.name).read_text().strip())
    except (OSError, ValueError):
        return None
    argv = _cmdline(pid)
    if argv and argv[0] == component.argv[0]:
        return pid
    return None


def start(layout: Layout, component: Component) -> int:
    """Start ``component`` in its own session, log it and record its PID."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    with layout.log_file(component.name).open("ab") as log:
        proc = subprocess.Popen(
            list(component.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PATH": SYSTEM_PATH},
            cwd=layout.root,
        )
    layout.pid_file(component.name).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    return False


def stop(layout: Layout, component: Component, *, grace: float = 10.0) -> None:
    """Stop ``component`` by its recorded PID (TERM, then KILL after ``grace``)."""
    pid = running_pid(layout, component)
    if pid is not None:
        if _is_group_leader(pid):
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, grace):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
    layout.pid_file(component.name).unlink(missing_ok=True)


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


# ---- readiness ---------------------------------------------------------------------------


def _tls_context(layout: Layout, *, etcd: bool = False) -> ssl.SSLContext:
    directory = layout.etcd_pki if etcd else layout.pki
    ca = directory / ("etcd-ca.crt" if etcd else "ca.crt")
    cert = "apiserver-etcd-client" if etcd else "admin"
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(directory / f"{cert}.crt"), str(directory / f"{cert}.key"))
    return context


def _get(host: str, port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, str]:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(host, port, timeout=3)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=3, context=context)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _wait(what: str, check: Callable[[], bool], *, seconds: float, log: Path | None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, ssl.SSLError):
            pass
        time.sleep(0.5)
    hint = f"; see {log}" if log else ""
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-6:])
    raise ClusterStartError(f"{what} did not become ready within {seconds:.0f} s{hint}{tail}")


def kubectl(
    layout: Layout, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the pinned kubectl against the cluster as its administrator."""
    return subprocess.run(
        [_binary(tools.KUBERNETES, "kubectl"), f"--kubeconfig={layout.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _apply(layout: Layout, documents: list[dict[str, object]]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    proc = kubectl(layout, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=body)
    if proc.returncode != 0:
        raise ClusterStartError(f"kubectl apply failed: {proc.stderr.strip()}")


def node_ready(layout: Layout) -> bool:
    """Return True when the node reports Ready."""
    proc = kubectl(layout, "get", "node", NODE_NAME, "-o", "json")
    if proc.returncode != 0:
        return False
    conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _readiness(layout: Layout, ip: str, name: str) -> Callable[[], bool] | None:
    checks: dict[str, Callable[[], bool]] = {
        "etcd": lambda: (
            _get("127.0.0.1", ETCD_CLIENT_PORT, "/health", _tls_context(layout, etcd=True))[1].find(
                '"health":"true"'
            )
            >= 0
        ),
        "kube-apiserver": lambda: (
            _get(ip, API_PORT, "/readyz", _tls_context(layout)) == (200, "ok")
        ),
        "containerd": lambda: (
            layout.containerd_socket.exists()
            and subprocess.run(
                ["ctr", "--address", str(layout.containerd_socket), "version"],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ),
        "kubelet": lambda: _get("127.0.0.1", 10248, "/healthz", None)[0] == 200,
        "kube-proxy": lambda: _get("127.0.0.1", 10256, "/healthz", None)[0] == 200,
        "kube-router": lambda: _get("127.0.0.1", 20244, "/healthz", None)[0] == 200,
    }
    return checks.get(name)


# ---- the whole node ----------------------------------------------------------------------


def ensure_tools(progress: Progress) -> None:
    """Check the Debian packages and build (or find cached) every pinned binary.

    Raises:
        ClusterToolError: a package is missing or a build failed.
    """
    missing = tools.missing_debian_packages()
    if missing:
        raise ClusterToolError(
            "Debian packages missing: " + " ".join(missing) + ". Install them with "
            f"`apt-get install -y {' '.join(missing)}` (or run `scripts/run setup`)."
        )
    for build in tools.ALL_BUILDS:
        if not build.present():
            progress(f"building {build.name} {build.version} (once; cached in {build.directory})")
        try:
            build.ensure()
        except ToolInstallError as err:
            raise ClusterToolError(str(err)) from None


def _images(layout: Layout) -> dict[str, images.BuiltImage]:
    out = cache_root() / "images"
    specs = {
        "pause": images.ImageSpec(
            name="ztml.local/pause",
            tag=tools.PAUSE_VERSION,
            files={"/pause": (tools.PAUSE.path("pause"), 0o755)},
            entrypoint=("/pause",),
            user="65535:65535",
        ),
        "coredns": images.ImageSpec(
            name="ztml.local/coredns",
            tag=tools.COREDNS_VERSION,
            files={"/coredns": (tools.COREDNS.path("coredns"), 0o755)},
            entrypoint=("/coredns",),
        ),
        "toolbox": images.toolbox_spec(Path("/bin/busybox")),
    }
    return {name: images.build_image(spec, out) for name, spec in specs.items()}


def states(layout: Layout) -> list[ComponentState]:
    """Return each component's state."""
    ip = node_ip()
    return [ComponentState(c.name, running_pid(layout, c)) for c in components(layout, ip)]


def up(layout: Layout, progress: Progress) -> bool:
    """Bring the cluster up; return False when it was already up (nothing done).

    Raises:
        ClusterToolError: a tool is missing or did not build.
        ClusterStartError: a component did not start in time (its log is named).
    """
    if os.geteuid() != 0:
        raise ClusterStartError("the local cluster needs root (run `sudo ztml cluster up`).")
    ip = node_ip()
    wanted = components(layout, ip)
    alive = [running_pid(layout, c) is not None for c in wanted]
    if all(alive) and node_ready(layout) and network.guard_installed():
        # The kubelet removes unused images under disk pressure, the sandbox image too:
        # put back any of the cluster's own images that went missing.
        built = _images(layout)
        missing = [
            image
            for image in built.values()
            if not images.present(image.pinned, socket=layout.containerd_socket)
        ]
        for image in missing:
            progress(f"re-importing {image.spec.tagged}, which was removed")
            images.import_image(image, socket=layout.containerd_socket)
        return bool(missing)
    ensure_tools(progress)
    if any(alive):
        progress("a previous cluster is partly running: restarting its components")
        for component in reversed(wanted):
            stop(layout, component)
    for directory in (layout.root, layout.config, layout.run, layout.logs):
        directory.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    progress("certificates and configuration")
    make_pki(layout, ip)
    built = _images(layout)
    write_configs(
        layout, ip, sandbox_image=built["pause"].pinned, helper_image=built["toolbox"].pinned
    )
    network.enable_forwarding()
    network.install_egress_guard(ip)
    for component in wanted:
        progress(f"starting {component.name}")
        start(layout, component)
        check = _readiness(layout, ip, component.name)
        if check is not None:
            _wait(component.name, check, seconds=60, log=layout.log_file(component.name))
        if component.name == "kube-apiserver":
            _apply(layout, addons.kube_router_rbac())
            _apply(layout, addons.local_path(built["toolbox"].pinned, str(layout.volumes)))
        if component.name == "containerd":
            for image in built.values():
                images.import_image(image, socket=layout.containerd_socket)
    progress("waiting for the node to be Ready")
    _wait("the node", lambda: node_ready(layout), seconds=90, log=layout.log_file("kubelet"))
    progress("starting CoreDNS")
    _apply(layout, addons.coredns(built["coredns"].pinned))
    proc = kubectl(
        layout, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=90s"
    )
    if proc.returncode != 0:
        raise ClusterStartError(f"CoreDNS did not become available: {proc.stderr.strip()}")
    # A restart keeps containerd's images: keep the record of the stack's images too.
    recorded = {**image_references(layout), **{name: image.pinned for name, image in built.items()}}
    (layout.root / "images.json").write_text(json.dumps(recorded, indent=2))
    return True


def import_stack_images(
    layout: Layout,
    progress: Progress,
    *,
    model_dir: Path | None = None,
    packages: Sequence[Path] = (),
) -> dict[str, str]:
    """Build (or reuse) the model service, OPA and PostgreSQL images; import them.

    The service image holds ``model_dir`` and each of ``packages`` (see
    :func:`imagebuild.service_image`).

    Returns every image's digest reference, also recorded for :func:`image_references`.

    Raises:
        ClusterToolError: a build step failed.
        ClusterStartError: the cluster is not running, or containerd refused an image.
    """
    if not layout.containerd_socket.exists():
        raise ClusterStartError("the local cluster is not running: run `ztml cluster up` first.")
    refs: dict[str, str] = {}
    for name, (archive, tagged) in imagebuild.build_all(
        model_dir, progress, packages=packages
    ).items():
        progress(f"importing the {name} image into the cluster")
        digest = images.import_archive(archive, tagged, socket=layout.containerd_socket)
        refs[name] = f"{tagged.rsplit(':', 1)[0]}@{digest}"
    recorded = {**image_references(layout), **refs}
    (layout.root / "images.json").write_text(json.dumps(recorded, indent=2))
    return refs


def image_references(layout: Layout) -> dict[str, str]:
    """Return the digest references of the images ``up`` imported (pause, coredns, toolbox)."""
    try:
        data = json.loads((layout.root / "images.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _kubepods_cgroups() -> Iterator[Path]:
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        pods = hierarchy / "kubepods"
        if pods.is_dir():
            yield pods


def _pod_pids() -> set[int]:
    pids: set[int] = set()
    for pods in _kubepods_cgroups():
        # os.walk ignores directories that vanish while it walks (pods being removed).
        for directory, _, files in os.walk(pods):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    text = Path(directory, "cgroup.procs").read_text()
                    pids.update(int(p) for p in text.split())
    return pids


def _kill_pods() -> None:
    """SIGKILL every process in the pods' cgroups until none is left (10 s at most)."""
    deadline = time.monotonic() + 10
    while (pids := _pod_pids()) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _kill_shims(layout: Layout) -> None:
    needle = str(layout.containerd_socket)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if argv and argv[0].endswith("containerd-shim-runc-v2") and needle in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _unmount_below(root: Path) -> None:
    mounts: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if (
            point == str(root)
            or point.startswith(f"{root}/")
            or point.startswith("/run/netns/cni-")
        ):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_cgroups() -> None:
    for pods in _kubepods_cgroups():
        for directory, _, _ in os.walk(pods, topdown=False):
            with contextlib.suppress(OSError):
                Path(directory).rmdir()


def down(layout: Layout, progress: Progress) -> None:
    """Stop everything ``up`` started and remove every trace of it."""
    ip = node_ip()
    wanted = components(layout, ip)
    by_name = {c.name: c for c in wanted}
    for name in ("local-path-provisioner", "kube-router", "kube-proxy", "kubelet"):
        progress(f"stopping {name}")
        stop(layout, by_name[name])
    progress("stopping pods")
    _kill_pods()
    _kill_shims(layout)
    for name in (
        "containerd",
        "kube-scheduler",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
    ):
        progress(f"stopping {name}")
        stop(layout, by_name[name])
    progress("removing mounts, network and state")
    _unmount_below(layout.root)
    network.remove_pod_network()
    network.remove_chains()
    network.remove_ipsets()
    _remove_cgroups()
    if layout.root.exists():
        shutil.rmtree(layout.root, ignore_errors=True)


def context_name() -> str:
    """Return the kubeconfig context ``up`` writes."""
    return CONTEXT
