"""The one builder of pod templates: every workload of the program goes through it.

A workload describes its containers with :class:`ContainerSpec` and its volumes with the
volume dataclasses below; :func:`hardened_pod_template` turns that description into a
pod template that always has: numeric non-root user and group, an fsGroup, a read-only
root filesystem with emptyDir volumes for ``/tmp`` and any scratch directory, no
privilege escalation, every capability dropped, the RuntimeDefault seccomp profile, no
service-account token, no service links, resource requests and limits, and probes.
Secrets can only reach a container as files (Secret volumes): the builder has no way to
put a secret in an environment variable. Variable names and values that look like
credentials are the admission policy's to judge (``policies/admission/containers.rego``),
which the CrossGuard policy pack applies to every manifest the program declares.

The pod template carries the annotation :data:`HARDENING_ANNOTATION` so tests (and
reviewers) can prove no workload was built around this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.errors import HardeningError

RUN_AS_USER = 10001
RUN_AS_GROUP = 10001
FS_GROUP = 10001
HARDENING_ANNOTATION = "ztml.dev/hardening"
HARDENING_VERSION = "infra.hardening/v1"
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one container (Kubernetes quantities)."""

    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "500m"
    memory_limit: str = "256Mi"
    ephemeral_storage_limit: str = "256Mi"


@dataclass(frozen=True)
class HttpProbe:
    """An HTTP GET probe on a container port (``https``: the kubelet speaks TLS, unverified)."""

    path: str
    port: int
    period_seconds: int = 10
    initial_delay_seconds: int = 5
    failure_threshold: int = 3
    https: bool = False


@dataclass(frozen=True)
class ExecProbe:
    """A probe that runs a command inside the container."""

    command: tuple[str, ...]
    period_seconds: int = 10
    initial_delay_seconds: int = 10
    failure_threshold: int = 6


Probe = HttpProbe | ExecProbe


@dataclass(frozen=True)
class Mount:
    """A volume mounted into a container.

    Attributes:
        volume: Name of a volume declared on the pod.
        path: Mount path.
        read_only: Mount read-only (the default; data volumes set False).
        sub_path_expr: Optional ``subPathExpr`` (e.g. ``$(POD_NAME)``).
        sub_path: Optional ``subPath`` (one file or directory of the volume).
    """

    volume: str
    path: str
    read_only: bool = True
    sub_path_expr: str | None = None
    sub_path: str | None = None


@dataclass(frozen=True)
class SecretVolume:
    """A Secret mounted as files (mode 0440, group-readable by the pod's fsGroup)."""

    name: str
    secret_name: pulumi.Input[str]


@dataclass(frozen=True)
class ConfigMapVolume:
    """A ConfigMap mounted as files; ``items`` maps keys to relative paths."""

    name: str
    config_map_name: pulumi.Input[str]
    items: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ClaimVolume:
    """A PersistentVolumeClaim."""

    name: str
    claim_name: pulumi.Input[str]


@dataclass(frozen=True)
class MemoryVolume:
    """A memory-backed emptyDir shared by the containers that mount it (e.g. a socket).

    It lives and dies with the pod, never touches the node's disk, and counts against
    the memory limit of the containers that write to it.
    """

    name: str
    size_limit: str = "1Mi"


Volume = SecretVolume | ConfigMapVolume | ClaimVolume | MemoryVolume


@dataclass(frozen=True)
class ContainerSpec:
    """What a workload says about one container; the builder adds the hardening.

    Attributes:
        name: Container name.
        image: Image reference pinned by digest.
        command: Entrypoint override.
        args: Arguments.
        ports: (name, port) pairs the container listens on for the pod network.
        env: Non-secret environment variables only.
        field_env: Environment variables from the downward API (name -> fieldPath).
        mounts: Volume mounts.
        liveness: Liveness probe (required for containers, refused for init containers).
        readiness: Readiness probe (required for containers, refused for init containers).
        resources: Requests and limits.
        scratch_dirs: Writable emptyDir mounts (``/tmp`` always included).
    """

    name: str
    image: pulumi.Input[str]
    liveness: Probe | None = None
    readiness: Probe | None = None
    command: tuple[str, ...] = ()
    args: tuple[pulumi.Input[str], ...] = ()
    ports: tuple[tuple[str, int], ...] = ()
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    field_env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    resources: Resources = Resources()
    scratch_dirs: tuple[str, ...] = ()


def _probe(probe: Probe | None) -> k8s.core.v1.ProbeArgs | None:
    if probe is None:
        return None
    if isinstance(probe, HttpProbe):
        return k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(
                path=probe.path, port=probe.port, scheme="HTTPS" if probe.https else None
            ),
            period_seconds=probe.period_seconds,
            initial_delay_seconds=probe.initial_delay_seconds,
            failure_threshold=probe.failure_threshold,
            timeout_seconds=3,
        )
    return k8s.core.v1.ProbeArgs(
        exec_=k8s.core.v1.ExecActionArgs(command=list(probe.command)),
        period_seconds=probe.period_seconds,
        initial_delay_seconds=probe.initial_delay_seconds,
        failure_threshold=probe.failure_threshold,
        timeout_seconds=5,
    )


def _scratch_volume_name(container: str, path: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"
    name = f"{container}-{slug}"[:63].strip("-")
    if not DNS_LABEL_RE.fullmatch(name):
        raise HardeningError(f"Cannot derive a volume name for {path!r} in {container!r}.")
    return name


def _scratch_dirs(spec: ContainerSpec) -> list[str]:
    dirs = ["/tmp"]  # noqa: S108 - an emptyDir mount, not a shared temp path
    dirs.extend(d for d in spec.scratch_dirs if d not in dirs)
    return dirs


def container_security_context(uid: int) -> k8s.core.v1.SecurityContextArgs:
    """Return the container security context every container gets."""
    return k8s.core.v1.SecurityContextArgs(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=RUN_AS_GROUP,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def _container(spec: ContainerSpec, uid: int, *, init: bool) -> k8s.core.v1.ContainerArgs:
    probed = spec.liveness is not None and spec.readiness is not None
    if init and (spec.liveness is not None or spec.readiness is not None):
        raise HardeningError(f"Init container {spec.name!r} cannot have probes.")
    if not init and not probed:
        raise HardeningError(f"Container {spec.name!r} needs liveness and readiness probes.")
    env = [k8s.core.v1.EnvVarArgs(name=name, value=value) for name, value in spec.env.items()]
    env += [
        k8s.core.v1.EnvVarArgs(
            name=name,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path=path)
            ),
        )
        for name, path in spec.field_env.items()
    ]
    mounts = [
        k8s.core.v1.VolumeMountArgs(
            name=m.volume,
            mount_path=m.path,
            read_only=m.read_only,
            sub_path_expr=m.sub_path_expr,
            sub_path=m.sub_path,
        )
        for m in spec.mounts
    ]
    mounts += [
        k8s.core.v1.VolumeMountArgs(name=_scratch_volume_name(spec.name, d), mount_path=d)
        for d in _scratch_dirs(spec)
    ]
    r = spec.resources
    return k8s.core.v1.ContainerArgs(
        name=spec.name,
        image=spec.image,
        image_pull_policy="IfNotPresent",
        command=list(spec.command) or None,
        args=list(spec.args) or None,
        ports=[
            k8s.core.v1.ContainerPortArgs(name=name, container_port=port, protocol="TCP")
            for name, port in spec.ports
        ]
        or None,
        env=env or None,
        volume_mounts=mounts,
        liveness_probe=_probe(spec.liveness),
        readiness_probe=_probe(spec.readiness),
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": r.cpu_request, "memory": r.memory_request},
            limits={
                "cpu": r.cpu_limit,
                "memory": r.memory_limit,
                "ephemeral-storage": r.ephemeral_storage_limit,
            },
        ),
        security_context=container_security_context(uid),
        termination_message_policy="FallbackToLogsOnError",
    )


def _volume(volume: Volume) -> k8s.core.v1.VolumeArgs:
    if isinstance(volume, SecretVolume):
        return k8s.core.v1.VolumeArgs(
            name=volume.name,
            secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=volume.secret_name, default_mode=0o440
            ),
        )
    if isinstance(volume, ConfigMapVolume):
        return k8s.core.v1.VolumeArgs(
            name=volume.name,
            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                name=volume.config_map_name,
                default_mode=0o444,
                items=[k8s.core.v1.KeyToPathArgs(key=k, path=p) for k, p in volume.items] or None,
            ),
        )
    if isinstance(volume, MemoryVolume):
        return k8s.core.v1.VolumeArgs(
            name=volume.name,
            empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
                medium="Memory", size_limit=volume.size_limit
            ),
        )
    return k8s.core.v1.VolumeArgs(
        name=volume.name,
        persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
            claim_name=volume.claim_name
        ),
    )


def hardened_pod_template(
    *,
    labels: Mapping[str, pulumi.Input[str]],
    containers: Sequence[ContainerSpec],
    service_account_name: pulumi.Input[str],
    volumes: Sequence[Volume] = (),
    annotations: Mapping[str, pulumi.Input[str]] | None = None,
    init_containers: Sequence[ContainerSpec] = (),
    uid: int = RUN_AS_USER,
    termination_grace_period_seconds: int = 30,
    claim_templates: Sequence[str] = (),
) -> k8s.core.v1.PodTemplateSpecArgs:
    """Build a hardened pod template from container and volume descriptions.

    Args:
        labels: Pod labels (selectors match these).
        containers: The pod's containers.
        service_account_name: A dedicated ServiceAccount (token automount off).
        volumes: Secret, ConfigMap, claim and memory volumes; scratch emptyDirs are added.
        annotations: Extra pod annotations; the hardening marker is always added.
        init_containers: Containers run to completion before the others (no probes).
        uid: Numeric user id, 10000 or more.
        termination_grace_period_seconds: Grace period on shutdown.
        claim_templates: Names of a StatefulSet's volume claim templates (mountable).

    Returns:
        The pod template.

    Raises:
        HardeningError: a container or volume description is refused.
    """
    if uid < 10000:
        raise HardeningError(f"uid {uid} is refused: use a numeric uid of 10000 or more.")
    if not containers:
        raise HardeningError("A pod needs at least one container.")
    names = [c.name for c in (*init_containers, *containers)]
    if len(set(names)) != len(names):
        raise HardeningError(f"Duplicate container names: {names}.")
    scratch = [
        k8s.core.v1.VolumeArgs(
            name=_scratch_volume_name(c.name, d),
            empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="64Mi"),
        )
        for c in (*init_containers, *containers)
        for d in _scratch_dirs(c)
    ]
    declared = {v.name for v in volumes} | set(claim_templates)
    for c in (*init_containers, *containers):
        for m in c.mounts:
            if m.volume not in declared:
                raise HardeningError(f"Container {c.name!r} mounts undeclared volume {m.volume!r}.")
    return k8s.core.v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(
            labels=dict(labels),
            annotations={**(annotations or {}), HARDENING_ANNOTATION: HARDENING_VERSION},
        ),
        spec=k8s.core.v1.PodSpecArgs(
            service_account_name=service_account_name,
            automount_service_account_token=False,
            enable_service_links=False,
            host_network=False,
            host_pid=False,
            host_ipc=False,
            termination_grace_period_seconds=termination_grace_period_seconds,
            security_context=k8s.core.v1.PodSecurityContextArgs(
                run_as_non_root=True,
                run_as_user=uid,
                run_as_group=RUN_AS_GROUP,
                fs_group=FS_GROUP,
                fs_group_change_policy="OnRootMismatch",
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
            ),
            init_containers=[_container(c, uid, init=True) for c in init_containers] or None,
            containers=[_container(c, uid, init=False) for c in containers],
            volumes=[_volume(v) for v in volumes] + scratch,
        ),
    )


def service_account(
    name: str, *, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> k8s.core.v1.ServiceAccount:
    """Declare a dedicated ServiceAccount whose token is never mounted."""
    return k8s.core.v1.ServiceAccount(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(namespace=namespace),
        automount_service_account_token=False,
        opts=opts,
    )


@dataclass(frozen=True)
class PodParts:
    """What a component contributes to a pod it does not own.

    Attributes:
        volumes: Volumes to declare on the pod.
        mounts: Mounts to add to the main container.
        env: Non-secret environment variables for the main container.
        containers: Extra containers (sidecars).
        annotations: Pod annotations.
        init_mounts: Mounts that replace, in init containers, the main container's
            mount of the same volume (e.g. a volume's root where the service gets a
            sub-directory the init step prepares).
    """

    volumes: tuple[Volume, ...] = ()
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    containers: tuple[ContainerSpec, ...] = ()
    annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    init_mounts: tuple[Mount, ...] = ()
