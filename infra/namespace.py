"""The namespace: Pod Security Admission at ``restricted``, a ResourceQuota, a LimitRange.

With the admission webhook on, the namespace carries the label that puts it under the
webhook (:data:`ADMISSION_LABEL`), and it is created only after the resources given in
the component's ``depends_on`` (the webhook configuration), so every resource of the
stack passes the webhook when it is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

PSA_LEVEL = "restricted"
PSA_VERSION = "v1.31"
PSA_LABELS = {
    f"pod-security.kubernetes.io/{mode}{suffix}": value
    for mode in ("enforce", "audit", "warn")
    for suffix, value in (("", PSA_LEVEL), ("-version", PSA_VERSION))
}
# Value: the admission webhook's namespace, whose configuration selects namespaces by it.
ADMISSION_LABEL = "ztml.dev/admission"


@dataclass(frozen=True)
class NamespaceArgs:
    """Inputs of :class:`Namespace`.

    Attributes:
        name: The namespace name (set explicitly: other resources and NetworkPolicies
            refer to it by name).
        max_pods: The most pods the autoscaler may run for one model; the quota leaves
            room for them (and a rolling update's surge pod) for each model, and for
            PostgreSQL, and no more.
        models: How many models the stack serves, each in its own Deployment.
        labels: Extra labels, e.g. the admission webhook's :data:`ADMISSION_LABEL`.
    """

    name: pulumi.Input[str]
    max_pods: int = 1
    models: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)


def quota_for(max_pods: int, *, models: int = 1) -> dict[str, str]:
    """Return the ResourceQuota's hard limits for up to ``max_pods`` pods of each model.

    A model pod may use up to 3 CPU and 3 GiB of limits (service, OPA sidecar); one
    extra pod per model covers a rolling update's surge (each Deployment rolls on its
    own) and one PostgreSQL pod is allowed for.
    """
    pods = models * (max_pods + 1)
    return {
        "requests.cpu": str(pods + 1),
        "requests.memory": f"{pods + 1}Gi",
        "limits.cpu": str(3 * pods + 1),
        "limits.memory": f"{3 * pods + 1}Gi",
        "requests.storage": "100Gi",
        "persistentvolumeclaims": "10",
        "pods": str(pods + 5),
        "services": "10",
        "services.loadbalancers": "0",
        "services.nodeports": "0",
        "secrets": "30",
        "configmaps": "30",
    }


class Namespace(pulumi.ComponentResource):
    """A namespace with restricted Pod Security Admission, a quota and default limits.

    Attributes:
        name: The namespace name, known once the namespace exists.
    """

    name: pulumi.Output[str]

    def __init__(
        self, name: str, args: NamespaceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:namespace:Namespace", name, None, opts)
        # Children do not inherit depends_on; the namespace must wait for what the
        # component waits for, and every namespaced resource waits for the namespace.
        child = pulumi.ResourceOptions(parent=self, depends_on=opts.depends_on if opts else None)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.name,
                labels={**PSA_LABELS, **args.labels, "app.kubernetes.io/part-of": "ztml"},
            ),
            opts=child,
        )
        self.name = namespace.metadata.name
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        k8s.core.v1.ResourceQuota(
            f"{name}-quota",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=self.name),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(
                hard=quota_for(args.max_pods, models=args.models)
            ),
            opts=in_namespace,
        )
        k8s.core.v1.LimitRange(
            f"{name}-limits",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=self.name),
            spec=k8s.core.v1.LimitRangeSpecArgs(
                limits=[
                    k8s.core.v1.LimitRangeItemArgs(
                        type="Container",
                        default={"cpu": "500m", "memory": "256Mi"},
                        default_request={"cpu": "100m", "memory": "128Mi"},
                        max={"cpu": "4", "memory": "8Gi"},
                    ),
                    k8s.core.v1.LimitRangeItemArgs(
                        type="PersistentVolumeClaim", max={"storage": "50Gi"}
                    ),
                ]
            ),
            opts=in_namespace,
        )
        self.register_outputs({"name": self.name})
