"""OPA as a sidecar of the model pod, with the repository's policies loaded.

Choice: OPA runs in the model pod and serves its API only on a Unix domain socket in a
memory-backed emptyDir of that pod (OPA mounts it read-write, the service and its init
step read-only), with mode 0600 (the pod's one numeric user). No TCP port, Service or
NetworkPolicy exposes the API, no process outside that pod can open the socket, and no
certificate or private key is needed, so nothing secret for it enters Pulumi state (and
no provider besides pulumi-kubernetes is needed). Its health endpoint is served on a
separate diagnostic TCP port (read-only: ``/health`` and ``/metrics``, no API) for the
kubelet's probes; the NetworkPolicies admit no pod to that port.

Decision logs go to OPA's console (the container's log stream).

Policies: every ``*.rego`` under ``policies/`` except ``*_test.rego`` and every
``policies/data/*.json`` go into one ConfigMap, mounted with the repository's layout so
that OPA loads them exactly as the tests do (one root, ``data.data.*`` for data files).
Decision logs are masked by ``policies/system/log/mask.rego`` as configured in
``policies/config/opa-config.yaml``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from infra.errors import PolicyBundleError
from infra.hardening import (
    ConfigMapVolume,
    ContainerSpec,
    HttpProbe,
    MemoryVolume,
    Mount,
    PodParts,
    Resources,
    Volume,
)
from service.authz.provenance import policy_load_args
from service.toolchain.opa import OPA_SERVER_ENV, OPA_STORE_FLAG

OPA_DIAGNOSTIC_PORT = 8282
POLICY_MOUNT = "/policies"
CONFIG_MOUNT = "/etc/opa"
SOCKET_DIR = "/run/ztml-opa"
SOCKET_PATH = f"{SOCKET_DIR}/opa.sock"
SKIPPED_DIRS = frozenset({"config", "examples", "tests"})
DEFAULT_OPA_CONFIG = """\
# Decision logs to stdout; the mask policy (data.system.log.mask) removes secrets.
decision_logs:
  console: true
  mask_decision: /system/log/mask
"""


@dataclass(frozen=True)
class PolicyBundle:
    """The policy files to load, as ConfigMap data.

    Attributes:
        files: ConfigMap key -> (path relative to policies/, text).
        opa_config: The OPA configuration file text.
        digest: ``sha256:<hex>`` over every path and text, for pod annotations.
    """

    files: dict[str, tuple[str, str]]
    opa_config: str
    digest: str

    def with_file(self, relative: str, text: str) -> PolicyBundle:
        """Return the bundle with one more file (e.g. a stack's data), digest included.

        Raises:
            PolicyBundleError: the bundle already has a file at ``relative``.
        """
        key = _config_map_key(relative)
        if key in self.files:
            raise PolicyBundleError(f"The policy bundle already has {relative}.")
        files = {**self.files, key: (relative, text)}
        return PolicyBundle(
            files=files, opa_config=self.opa_config, digest=_digest(files, self.opa_config)
        )


def _config_map_key(relative: str) -> str:
    return relative.replace("/", "__")


def _digest(files: dict[str, tuple[str, str]], opa_config: str) -> str:
    digest = hashlib.sha256()
    for key in sorted(files):
        relative, text = files[key]
        digest.update(relative.encode() + b"\0" + text.encode() + b"\0")
    digest.update(opa_config.encode())
    return f"sha256:{digest.hexdigest()}"


def load_policy_bundle(policies_dir: Path) -> PolicyBundle:
    """Collect the policies OPA serves from the repository's ``policies/`` directory.

    Args:
        policies_dir: The repository's ``policies/`` directory.

    Returns:
        The bundle: non-test Rego files and data JSON files, plus the OPA config.

    Raises:
        PolicyBundleError: the directory is missing or holds no policy.
    """
    if not policies_dir.is_dir():
        raise PolicyBundleError(f"Policy directory {policies_dir} does not exist.")
    files: dict[str, tuple[str, str]] = {}
    candidates = sorted(policies_dir.rglob("*.rego")) + sorted(
        (policies_dir / "data").glob("*.json")
    )
    for path in candidates:
        relative = path.relative_to(policies_dir).as_posix()
        if path.name.endswith("_test.rego") or relative.split("/")[0] in SKIPPED_DIRS:
            continue
        files[_config_map_key(relative)] = (relative, path.read_text(encoding="utf-8"))
    if not any(rel.endswith(".rego") for rel, _ in files.values()):
        raise PolicyBundleError(f"No Rego policy found under {policies_dir}.")
    config_file = policies_dir / "config" / "opa-config.yaml"
    opa_config = (
        config_file.read_text(encoding="utf-8") if config_file.is_file() else DEFAULT_OPA_CONFIG
    )
    return PolicyBundle(files=files, opa_config=opa_config, digest=_digest(files, opa_config))


def opa_server_args(*listen: str) -> tuple[str, ...]:
    """Return ``opa run --server`` arguments: ``listen`` (addresses, TLS, ...), then ztml's.

    The rest is the same for every OPA the program runs: the diagnostic listener for
    the kubelet's probes, the configuration file (console decision logs, masked), JSON
    logs, no version check (there is no egress to check against), the read-optimized
    store, and the local stack's load rules on the mounted policies.
    """
    return (
        "run",
        "--server",
        *listen,
        f"--diagnostic-addr=0.0.0.0:{OPA_DIAGNOSTIC_PORT}",
        f"--config-file={CONFIG_MOUNT}/opa-config.yaml",
        "--log-format=json",
        "--log-level=info",
        "--skip-version-check",
        OPA_STORE_FLAG,
        # The local stack's load rules; ".*" also skips the kubelet's "..data" and
        # timestamped directories of a ConfigMap volume, which hold every file twice.
        *policy_load_args(Path(POLICY_MOUNT)),
    )


def policy_config_maps(
    name: str,
    *,
    namespace: pulumi.Input[str],
    bundle: PolicyBundle,
    labels: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> tuple[k8s.core.v1.ConfigMap, k8s.core.v1.ConfigMap]:
    """Declare the ConfigMaps of ``bundle``: ``<name>-policies`` and ``<name>-config``."""
    policies = k8s.core.v1.ConfigMap(
        f"{name}-policies",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            namespace=namespace,
            labels=labels,
            annotations={"ztml.dev/policy-digest": bundle.digest},
        ),
        data={key: text for key, (_, text) in bundle.files.items()},
        opts=opts,
    )
    opa_config = k8s.core.v1.ConfigMap(
        f"{name}-config",
        metadata=k8s.meta.v1.ObjectMetaArgs(namespace=namespace, labels=labels),
        data={"opa-config.yaml": bundle.opa_config},
        opts=opts,
    )
    return policies, opa_config


def policy_volumes(
    bundle: PolicyBundle,
    *,
    policies_config_map: pulumi.Input[str],
    opa_config_map: pulumi.Input[str],
) -> tuple[tuple[ConfigMapVolume, ...], tuple[Mount, ...]]:
    """Return the volumes and OPA's mounts that lay ``bundle`` out as the repository does."""
    volumes = (
        ConfigMapVolume(
            "opa-policies",
            policies_config_map,
            items=tuple((key, rel) for key, (rel, _) in sorted(bundle.files.items())),
        ),
        ConfigMapVolume("opa-config", opa_config_map),
    )
    mounts = (Mount("opa-policies", POLICY_MOUNT), Mount("opa-config", CONFIG_MOUNT))
    return volumes, mounts


@dataclass(frozen=True)
class PolicyEngineArgs:
    """Inputs of :class:`PolicyEngine`.

    Attributes:
        namespace: Namespace of the ConfigMaps.
        image: The OPA image pinned by digest.
        bundle: The policies to load.
    """

    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    bundle: PolicyBundle


class PolicyEngine(pulumi.ComponentResource):
    """The policy and OPA-config ConfigMaps, and the OPA sidecar for the model pod.

    Attributes:
        policies_config_map_name: ConfigMap holding the policies.
        opa_config_map_name: ConfigMap holding OPA's configuration.
        policy_digest: Digest of the loaded policies (also a pod annotation).
        pod_parts: The sidecar, its volumes and the service's OPA client settings.
    """

    policies_config_map_name: pulumi.Output[str]
    opa_config_map_name: pulumi.Output[str]
    policy_digest: pulumi.Output[str]
    pod_parts: PodParts

    def __init__(
        self, name: str, args: PolicyEngineArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:policy:PolicyEngine", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/part-of": "ztml", "app.kubernetes.io/component": "opa"}
        policies, opa_config = policy_config_maps(
            name, namespace=args.namespace, bundle=args.bundle, labels=labels, opts=child
        )
        self.policies_config_map_name = policies.metadata.name
        self.opa_config_map_name = opa_config.metadata.name
        self.policy_digest = pulumi.Output.from_input(args.bundle.digest)
        self.pod_parts = self._pod_parts(args)
        self.register_outputs(
            {
                "policies_config_map_name": self.policies_config_map_name,
                "opa_config_map_name": self.opa_config_map_name,
                "policy_digest": self.policy_digest,
            }
        )

    def _pod_parts(self, args: PolicyEngineArgs) -> PodParts:
        opa_args = opa_server_args(f"--addr=unix://{SOCKET_PATH}", "--unix-socket-perm=600")
        policy_vols, policy_mounts = policy_volumes(
            args.bundle,
            policies_config_map=self.policies_config_map_name,
            opa_config_map=self.opa_config_map_name,
        )
        volumes: tuple[Volume, ...] = (*policy_vols, MemoryVolume("opa-socket"))
        mounts = (*policy_mounts, Mount("opa-socket", SOCKET_DIR, read_only=False))
        health = HttpProbe(path="/health", port=OPA_DIAGNOSTIC_PORT)
        sidecar = ContainerSpec(
            name="opa",
            image=args.image,
            args=opa_args,
            # One scheduler thread and a less eager collector, as under `ztml up`
            # (service/toolchain/opa.py says why; infra/README.md too).
            env=dict(OPA_SERVER_ENV),
            ports=(("opa-diag", OPA_DIAGNOSTIC_PORT),),
            mounts=mounts,
            liveness=health,
            readiness=health,
            resources=Resources(
                cpu_request="50m", memory_request="96Mi", cpu_limit="500m", memory_limit="256Mi"
            ),
        )
        return PodParts(
            volumes=volumes,
            # Read-only: connect() needs no write access to the mount (Linux checks write
            # permission on the socket inode only), so the service can ask OPA but can
            # neither replace the socket nor write anything else there.
            mounts=(Mount("opa-socket", SOCKET_DIR),),
            env={"ZTML_OPA_URL": f"unix://{SOCKET_PATH}"},
            containers=(sidecar,),
            annotations={"ztml.dev/policy-digest": args.bundle.digest},
        )
