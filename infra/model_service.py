"""The model service: Deployment, ClusterIP Service, PodDisruptionBudget and autoscaler.

The pod comes from the shared hardening builder. The service container runs
``bentoml serve`` on port 3000, TLS by default (its certificate from
``ztml:serviceTlsCert``/``serviceTlsKey`` as a ``kubernetes.io/tls`` Secret; plain HTTP
only with ``ztml:insecurePlainHttp``), with HTTPS probes on ``/livez`` and ``/readyz``; the approved
model digest is pinned twice (``ZTML_MODEL_DIGEST`` and the pod annotation
``ztml.dev/model-digest``), so a pod can only serve the digest the deploy gate passed.
Only non-secret settings are environment variables; keys, certificates and the ledger
URL are Secret files contributed by the other components as :class:`PodParts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.hardening import (
    ContainerSpec,
    HttpProbe,
    Mount,
    PodParts,
    Resources,
    hardened_pod_template,
    service_account,
)
from infra.tls import TlsIdentity, tls_secret

SERVICE_PORT = 3000
# Every model's pods carry MODEL_POD_LABELS (what the NetworkPolicies select); each
# model's own labels (its Deployment's and Service's selector) tell the models apart.
MODEL_POD_LABELS = {
    "app.kubernetes.io/component": "model-service",
    "app.kubernetes.io/part-of": "ztml",
}
MODEL_LABELS = {"app.kubernetes.io/name": "ztml-model", "app.kubernetes.io/part-of": "ztml"}
# `bentoml serve`, with BentoML's process-manager control sockets on Unix sockets instead of
# loopback TCP ports other containers of the pod could reach (service/app/serve.py).
SERVE_COMMAND = (
    "python",
    "-m",
    "service.app.serve",
    "service.app.service:ZtmlModelService",
    "--host",
    "0.0.0.0",  # noqa: S104 - the pod network; NetworkPolicies decide who may connect
    "--port",
    str(SERVICE_PORT),
)
# Stable names: clients call ztml-model.<namespace>.svc by DNS, operators run
# `kubectl exec deploy/ztml-model`; the namespace belongs to the stack, so nothing clashes.
WORKLOAD_NAME = "ztml-model"
CACHE_DIR = "/var/cache/ztml"
MODEL_PATH = "/opt/ztml/model/model.safetensors"
# Extra models' packages, baked into the image by `ztml cluster images --package`.
PACKAGES_DIR = "/opt/ztml/models"
TLS_DIR = "/etc/ztml/service-tls"


def model_labels(model: str | None = None) -> dict[str, str]:
    """The labels selecting one model's pods: the primary model's without a name."""
    if model is None:
        return dict(MODEL_LABELS)
    return {"app.kubernetes.io/name": model, "app.kubernetes.io/part-of": "ztml"}


@dataclass(frozen=True)
class ModelServiceArgs:
    """Inputs of :class:`ModelService`.

    Attributes:
        namespace: Namespace of every resource.
        image: The service image pinned by digest.
        model_digest: The approved model digest (passed the deploy gate).
        replicas: Initial and minimum replicas.
        max_replicas: Autoscaler maximum.
        parts: Volumes, mounts, env and sidecars from the other components.
        init_command: Command of an init container that runs with the service's image,
            env and mounts before the service starts (seeds the ledger); none if empty.
        env: Extra non-secret settings.
        tls: The serving certificate of the service port (a ``kubernetes.io/tls``
            Secret mounted at :data:`TLS_DIR`), or None for plain HTTP
            (``ztml:insecurePlainHttp``).
        workload_name: The Deployment's and Service's name (what clients dial).
        model_path: ``ZTML_MODEL_PATH`` in the image: the primary model's weights, or an
            extra model's package directory under :data:`PACKAGES_DIR`.
        labels: The labels selecting this model's pods (:func:`model_labels`); the pods
            also carry :data:`MODEL_POD_LABELS`.
    """

    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    model_digest: str
    replicas: int
    max_replicas: int
    parts: Sequence[PodParts] = field(default_factory=tuple)
    init_command: tuple[str, ...] = ()
    env: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    tls: TlsIdentity | None = None
    workload_name: str = WORKLOAD_NAME
    model_path: str = MODEL_PATH
    labels: Mapping[str, str] = field(default_factory=lambda: dict(MODEL_LABELS))


class ModelService(pulumi.ComponentResource):
    """The hardened model service.

    Attributes:
        deployment_name: The Deployment's name.
        service_name: The ClusterIP Service's name.
        service_port: The port clients call.
    """

    deployment_name: pulumi.Output[str]
    service_name: pulumi.Output[str]
    service_port: pulumi.Output[int]

    def __init__(
        self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:model:ModelService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # A named resource cannot be created before its old self is deleted.
        named = pulumi.ResourceOptions(parent=self, delete_before_replace=True)
        labels = dict(args.labels)
        metadata = k8s.meta.v1.ObjectMetaArgs(namespace=args.namespace, labels=labels)
        account = service_account(f"{name}-sa", namespace=args.namespace, opts=child)
        env: dict[str, pulumi.Input[str]] = {
            "ZTML_MODEL_DIGEST": args.model_digest,
            "ZTML_MODEL_PATH": args.model_path,
            "HOME": CACHE_DIR,
            "BENTOML_HOME": f"{CACHE_DIR}/bentoml",
            "PYTHONUNBUFFERED": "1",
            "BENTOML_DO_NOT_TRACK": "True",
        }
        parts = list(args.parts)
        if args.tls is None:
            # ztml:insecurePlainHttp: the service refuses plain HTTP unless told by name.
            env["ZTML_INSECURE_PLAIN_HTTP"] = "true"
        else:
            _, tls_parts = tls_secret(
                f"{name}-tls",
                identity=args.tls,
                namespace=args.namespace,
                volume="service-tls",
                mount_path=TLS_DIR,
                opts=child,
            )
            parts.append(tls_parts)
            # One directory, not a path per file: the pod spec stays free of variable
            # names the admission policy reads as credentials (``*_KEY``).
            env["ZTML_TLS_DIR"] = TLS_DIR
        mounts: list[Mount] = []
        for part in parts:
            env |= dict(part.env)
            mounts.extend(part.mounts)
        env |= args.env
        # With TLS the kubelet probes over HTTPS (it sends no client certificate and does
        # not verify the server's, as Kubernetes documents for HTTPS probes).
        https = args.tls is not None
        probe_ready = HttpProbe(
            path="/readyz", port=SERVICE_PORT, initial_delay_seconds=10, https=https
        )
        probe_live = HttpProbe(
            path="/livez",
            port=SERVICE_PORT,
            initial_delay_seconds=20,
            failure_threshold=5,
            https=https,
        )
        service = ContainerSpec(
            name="model",
            image=args.image,
            command=SERVE_COMMAND,
            ports=(("http", SERVICE_PORT),),
            env=env,
            field_env={"POD_NAME": "metadata.name"},
            mounts=tuple(mounts),
            liveness=probe_live,
            readiness=probe_ready,
            resources=Resources(
                cpu_request="250m",
                memory_request="512Mi",
                cpu_limit="2",
                memory_limit="2Gi",
                ephemeral_storage_limit="1Gi",
            ),
            scratch_dirs=(CACHE_DIR,),
        )
        replaced = {m.volume: m for part in parts for m in part.init_mounts}
        init = [
            ContainerSpec(
                name="ledger-seed",
                image=args.image,
                command=args.init_command,
                env=env,
                field_env={"POD_NAME": "metadata.name"},
                mounts=tuple(replaced.get(m.volume, m) for m in mounts),
                resources=Resources(
                    cpu_request="50m",
                    memory_request="128Mi",
                    cpu_limit="500m",
                    memory_limit="512Mi",
                ),
                scratch_dirs=(CACHE_DIR,),
            )
        ]
        annotations: dict[str, pulumi.Input[str]] = {"ztml.dev/model-digest": args.model_digest}
        for part in parts:
            annotations |= dict(part.annotations)
        template = hardened_pod_template(
            labels=labels | MODEL_POD_LABELS,
            annotations=annotations,
            containers=[service, *(c for part in parts for c in part.containers)],
            init_containers=init if args.init_command else (),
            volumes=[v for part in parts for v in part.volumes],
            service_account_name=account.metadata.name,
        )
        single = args.replicas == 1
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.workload_name,
                namespace=args.namespace,
                labels=labels,
                annotations={"ztml.dev/model-digest": args.model_digest},
            ),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=args.replicas,
                revision_history_limit=5,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate")
                if single
                else k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_unavailable=0, max_surge=1
                    ),
                ),
                template=template,
            ),
            opts=named,
        )
        svc = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.workload_name, namespace=args.namespace, labels=labels
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=labels,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="http", port=SERVICE_PORT, target_port="http", protocol="TCP"
                    )
                ],
            ),
            opts=named,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=metadata,
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            ),
            opts=child,
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=metadata,
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                min_replicas=args.replicas,
                max_replicas=args.max_replicas,
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=deployment.metadata.name
                ),
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(
                                type="Utilization", average_utilization=70
                            ),
                        ),
                    )
                ],
            ),
            opts=child,
        )
        self.deployment_name = deployment.metadata.name
        self.service_name = svc.metadata.name
        self.service_port = pulumi.Output.from_input(SERVICE_PORT)
        self.register_outputs(
            {
                "deployment_name": self.deployment_name,
                "service_name": self.service_name,
                "service_port": self.service_port,
            }
        )
