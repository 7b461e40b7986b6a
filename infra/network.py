"""NetworkPolicies: deny everything, then allow only the paths the stack needs.

Allowed paths: DNS to kube-dns for every pod; clients (pods labelled
``ztml.dev/client=true`` in the namespace, and any pod of the configured client
namespaces) to the model service port, as ingress of the model pods and, for the
namespace's own clients, as their egress (the default deny covers them too); the model
service to PostgreSQL when the ledger lives there. OPA is a sidecar reached over a Unix
socket, so no NetworkPolicy path to its API exists; its diagnostic port admits no pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

CLIENT_LABEL = "ztml.dev/client"
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
POSTGRES_PORT = 5432


@dataclass(frozen=True)
class NetworkArgs:
    """Inputs of :class:`Network`.

    Attributes:
        namespace: Namespace the policies apply to.
        model_labels: Labels selecting the model service pods.
        service_port: The model service port clients may reach.
        client_namespaces: Extra namespaces whose pods may call the model service.
        postgres_labels: Labels selecting PostgreSQL pods, or None without PostgreSQL.
    """

    namespace: pulumi.Input[str]
    model_labels: Mapping[str, str]
    service_port: int
    client_namespaces: Sequence[str] = field(default_factory=tuple)
    postgres_labels: Mapping[str, str] | None = None


def _ns_selector(namespace: str) -> k8s.meta.v1.LabelSelectorArgs:
    return k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace})


class Network(pulumi.ComponentResource):
    """Default-deny ingress and egress plus the explicit allows of the stack.

    Attributes:
        policy_names: Names of every NetworkPolicy declared.
    """

    policy_names: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        model = k8s.meta.v1.LabelSelectorArgs(match_labels=dict(args.model_labels))

        def policy(role: str, spec: k8s.networking.v1.NetworkPolicySpecArgs) -> pulumi.Output[str]:
            return k8s.networking.v1.NetworkPolicy(
                f"{name}-{role}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    namespace=args.namespace, labels={"app.kubernetes.io/part-of": "ztml"}
                ),
                spec=spec,
                opts=child,
            ).metadata.name

        names = [
            policy(
                "default-deny",
                k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                    policy_types=["Ingress", "Egress"],
                ),
            ),
            policy(
                "allow-dns",
                k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                    policy_types=["Egress"],
                    egress=[
                        k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                            to=[
                                k8s.networking.v1.NetworkPolicyPeerArgs(
                                    namespace_selector=_ns_selector(DNS_NAMESPACE),
                                    pod_selector=k8s.meta.v1.LabelSelectorArgs(
                                        match_labels=DNS_POD_LABELS
                                    ),
                                )
                            ],
                            ports=[
                                k8s.networking.v1.NetworkPolicyPortArgs(protocol=p, port=53)
                                for p in ("UDP", "TCP")
                            ],
                        )
                    ],
                ),
            ),
            policy(
                "allow-clients",
                k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=model,
                    policy_types=["Ingress"],
                    ingress=[
                        k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                            from_=[
                                k8s.networking.v1.NetworkPolicyPeerArgs(
                                    pod_selector=k8s.meta.v1.LabelSelectorArgs(
                                        match_labels={CLIENT_LABEL: "true"}
                                    )
                                ),
                                *(
                                    k8s.networking.v1.NetworkPolicyPeerArgs(
                                        namespace_selector=_ns_selector(ns)
                                    )
                                    for ns in args.client_namespaces
                                ),
                            ],
                            ports=[
                                k8s.networking.v1.NetworkPolicyPortArgs(
                                    protocol="TCP", port=args.service_port
                                )
                            ],
                        )
                    ],
                ),
            ),
            policy(
                "allow-client-egress",
                k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={CLIENT_LABEL: "true"}),
                    policy_types=["Egress"],
                    egress=[
                        k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                            to=[k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=model)],
                            ports=[
                                k8s.networking.v1.NetworkPolicyPortArgs(
                                    protocol="TCP", port=args.service_port
                                )
                            ],
                        )
                    ],
                ),
            ),
        ]
        if args.postgres_labels is not None:
            postgres = k8s.meta.v1.LabelSelectorArgs(match_labels=dict(args.postgres_labels))
            port = [k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=POSTGRES_PORT)]
            names.append(
                policy(
                    "allow-model-to-postgres",
                    k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=model,
                        policy_types=["Egress"],
                        egress=[
                            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                                to=[k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=postgres)],
                                ports=port,
                            )
                        ],
                    ),
                )
            )
            names.append(
                policy(
                    "allow-postgres-from-model",
                    k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=postgres,
                        policy_types=["Ingress"],
                        ingress=[
                            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                                from_=[k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=model)],
                                ports=port,
                            )
                        ],
                    ),
                )
            )
        self.policy_names = pulumi.Output.all(*names).apply(lambda n: [str(x) for x in n])
        self.register_outputs({"policy_names": self.policy_names})
