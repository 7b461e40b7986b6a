"""The admission policy enforced by the API server: OPA as a validating admission webhook.

``policies/admission`` runs before deploy (OPA over the declared manifests, the CrossGuard
pack); this component makes the API server run the same rules on every create and update
in the protected namespaces, so a privileged pod cannot be added later with kubectl.

- Its own namespace ``<namespace>-admission`` (restricted Pod Security Admission, a
  quota, default-deny ingress and egress) holds two OPA replicas built with the shared
  pod builder, a PodDisruptionBudget and a ClusterIP Service on 443.
- OPA loads the same policy ConfigMap the model pod's sidecar loads (the repository's
  ``policies/`` without tests), plus ``data/admission_webhook.json`` with the stack's
  parameters, and answers ``POST /v0/data/ztml/admission/webhook/response``
  (``policies/admission/webhook.rego``: the AdmissionReview in, the AdmissionReview
  response out). It serves HTTPS with the certificate of ``ztml:admissionTlsCert`` and
  ``ztml:admissionTlsKey`` (:mod:`infra.tls`), authorizes its own API with
  ``policies/system/authz`` (only that decision and ``/health``; no policy or data can
  be read or replaced), and logs each decision to the console through the mask policy.
- Ingress reaches only the webhook port, and only from ``ztml:apiServerCidrs``.
- The ValidatingWebhookConfiguration (``failurePolicy: Fail``) matches the kinds the
  policy judges, in namespaces labelled ``ztml.dev/admission=<webhook namespace>``
  (:class:`infra.namespace.Namespace` labels the stack's); kube-system, kube-public,
  kube-node-lease and the webhook's own namespace are excluded by name as well, so a
  broken webhook can never lock the cluster or itself out.

The configuration is declared after the OPA Deployment is ready (the provider awaits the
rollout), and the program declares the stack's namespace after the configuration, so
the stack's own resources pass the webhook during ``pulumi up``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.config import AdmissionConfig
from infra.hardening import (
    ContainerSpec,
    HttpProbe,
    PodParts,
    Resources,
    hardened_pod_template,
    service_account,
)
from infra.namespace import ADMISSION_LABEL, PSA_LABELS
from infra.policy_engine import (
    OPA_DIAGNOSTIC_PORT,
    PolicyBundle,
    opa_server_args,
    policy_config_maps,
    policy_volumes,
)
from infra.tls import CERT_FILE, KEY_FILE, tls_secret
from service.toolchain.opa import OPA_SERVER_ENV

WEBHOOK_PORT = 8443
SERVICE_PORT = 443
WEBHOOK_PATH = "/v0/data/ztml/admission/webhook/response"
WEBHOOK_NAME = "admission.ztml.dev"
TIMEOUT_SECONDS = 5
TLS_DIR = "/etc/ztml-admission/tls"
SETTINGS_FILE = "data/admission_webhook.json"
LABELS = {
    "app.kubernetes.io/name": "ztml-admission",
    "app.kubernetes.io/component": "admission",
    "app.kubernetes.io/part-of": "ztml",
}
# Never matched, whatever their labels say.
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# What the webhook sees: every kind policies/admission judges (the workload kinds of
# policies/lib/k8s.rego and Services), and a pod's ephemeral containers (`kubectl debug`).
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("pods", "pods/ephemeralcontainers", "services")),
    ("apps", ("deployments", "statefulsets", "daemonsets", "replicasets")),
    ("batch", ("jobs", "cronjobs")),
)


def settings_document(settings: AdmissionConfig) -> str:
    """Return ``data/admission_webhook.json``: the stack's parameters for the webhook."""
    return json.dumps({"admission_webhook": {"parameters": settings.parameters}}, indent=2)


@dataclass(frozen=True)
class AdmissionWebhookArgs:
    """Inputs of :class:`AdmissionWebhook`.

    Attributes:
        settings: The webhook's validated settings (namespace, API server CIDRs, TLS,
            parameters).
        image: The OPA image pinned by digest.
        bundle: The repository's policies (the sidecar's bundle).
        replicas: OPA replicas (two: one may be evicted while the other answers).
    """

    settings: AdmissionConfig
    image: pulumi.Input[str]
    bundle: PolicyBundle
    replicas: int = 2


class AdmissionWebhook(pulumi.ComponentResource):
    """OPA serving the admission policy to the API server, and the webhook configuration.

    Attributes:
        namespace: The webhook's namespace.
        service_name: The webhook's Service.
        configuration_name: The ValidatingWebhookConfiguration's name.
        protected_labels: The label that puts a namespace under the webhook.
        policy_digest: Digest of the policies and settings OPA loads.
        configuration: The ValidatingWebhookConfiguration (declare protected resources
            after it).
    """

    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    configuration_name: pulumi.Output[str]
    protected_labels: dict[str, str]
    policy_digest: pulumi.Output[str]
    configuration: k8s.admissionregistration.v1.ValidatingWebhookConfiguration

    def __init__(
        self, name: str, args: AdmissionWebhookArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:admission:AdmissionWebhook", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        named = pulumi.ResourceOptions(parent=self, delete_before_replace=True)
        self.protected_labels = {ADMISSION_LABEL: settings.namespace}
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=settings.namespace,
                labels={**PSA_LABELS, "app.kubernetes.io/part-of": "ztml"},
            ),
            opts=child,
        )
        self.namespace = namespace.metadata.name
        ns = self.namespace
        k8s.core.v1.ResourceQuota(
            f"{name}-quota",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=ns),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(hard=self._quota(args.replicas)),
            opts=child,
        )
        allow_api_server = self._network_policies(name, ns, settings, child)
        bundle = args.bundle.with_file(SETTINGS_FILE, settings_document(settings))
        policies, opa_config = policy_config_maps(
            name, namespace=ns, bundle=bundle, labels=LABELS, opts=child
        )
        _, tls = tls_secret(
            f"{name}-tls",
            identity=settings.tls,
            namespace=ns,
            volume="webhook-tls",
            mount_path=TLS_DIR,
            opts=child,
        )
        account = service_account(f"{name}-sa", namespace=ns, opts=child)
        template = self._pod_template(
            args,
            bundle,
            tls,
            policies.metadata.name,
            opa_config.metadata.name,
            account.metadata.name,
        )
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=settings.service, namespace=ns, labels=LABELS),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=args.replicas,
                revision_history_limit=5,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=LABELS),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_unavailable=0, max_surge=1
                    ),
                ),
                template=template,
            ),
            opts=named,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=ns, labels=LABELS),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=LABELS),
            ),
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=settings.service, namespace=ns, labels=LABELS),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=LABELS,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="https", port=SERVICE_PORT, target_port="https", protocol="TCP"
                    )
                ],
            ),
            opts=named,
        )
        self.service_name = service.metadata.name
        self.configuration = self._configuration(
            name,
            settings,
            service,
            pulumi.ResourceOptions(
                parent=self,
                delete_before_replace=True,
                depends_on=[deployment, service, allow_api_server],
            ),
        )
        self.configuration_name = self.configuration.metadata.name
        self.policy_digest = pulumi.Output.from_input(bundle.digest)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "service_name": self.service_name,
                "configuration_name": self.configuration_name,
                "policy_digest": self.policy_digest,
            }
        )

    @staticmethod
    def _quota(replicas: int) -> dict[str, str]:
        """Room for the replicas and one surge pod of a rolling update, and nothing else."""
        pods = replicas + 1
        return {
            "pods": str(pods),
            "requests.cpu": f"{50 * pods}m",
            "requests.memory": f"{96 * pods}Mi",
            "limits.cpu": f"{500 * pods}m",
            "limits.memory": f"{256 * pods}Mi",
            "services": "1",
            "services.loadbalancers": "0",
            "services.nodeports": "0",
            "persistentvolumeclaims": "0",
            # Ours, and room for each to be replaced: an update creates the new object
            # before it deletes the old one (seen on a live `up` that changed a policy).
            "secrets": "4",
            # Two of ours, their replacements, and the kube-root-ca.crt every namespace gets.
            "configmaps": "5",
        }

    @staticmethod
    def _network_policies(
        name: str,
        namespace: pulumi.Input[str],
        settings: AdmissionConfig,
        opts: pulumi.ResourceOptions,
    ) -> k8s.networking.v1.NetworkPolicy:
        """Deny all traffic, then admit the API server to the webhook port only."""
        metadata = k8s.meta.v1.ObjectMetaArgs(namespace=namespace, labels=LABELS)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny",
            metadata=metadata,
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                policy_types=["Ingress", "Egress"],
            ),
            opts=opts,
        )
        return k8s.networking.v1.NetworkPolicy(
            f"{name}-allow-api-server",
            metadata=metadata,
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=LABELS),
                policy_types=["Ingress"],
                ingress=[
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[
                            k8s.networking.v1.NetworkPolicyPeerArgs(
                                ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr)
                            )
                            for cidr in settings.api_server_cidrs
                        ],
                        ports=[
                            k8s.networking.v1.NetworkPolicyPortArgs(
                                protocol="TCP", port=WEBHOOK_PORT
                            )
                        ],
                    )
                ],
            ),
            opts=opts,
        )

    @staticmethod
    def _pod_template(
        args: AdmissionWebhookArgs,
        bundle: PolicyBundle,
        tls: PodParts,
        policies_config_map: pulumi.Input[str],
        opa_config_map: pulumi.Input[str],
        account: pulumi.Input[str],
    ) -> k8s.core.v1.PodTemplateSpecArgs:
        volumes, mounts = policy_volumes(
            bundle, policies_config_map=policies_config_map, opa_config_map=opa_config_map
        )
        # With a TLS certificate OPA serves the diagnostic listener over TLS too.
        health = HttpProbe(path="/health", port=OPA_DIAGNOSTIC_PORT, https=True)
        opa = ContainerSpec(
            name="opa",
            image=args.image,
            args=opa_server_args(
                f"--addr=0.0.0.0:{WEBHOOK_PORT}",
                f"--tls-cert-file={TLS_DIR}/{CERT_FILE}",
                f"--tls-private-key-file={TLS_DIR}/{KEY_FILE}",
                "--min-tls-version=1.2",
                # data.system.authz decides every API call: only the webhook's decision
                # and /health; policies and data can be neither read nor replaced.
                "--authorization=basic",
            ),
            env=dict(OPA_SERVER_ENV),
            ports=(("https", WEBHOOK_PORT), ("opa-diag", OPA_DIAGNOSTIC_PORT)),
            mounts=(*mounts, *tls.mounts),
            liveness=health,
            readiness=health,
            resources=Resources(
                cpu_request="50m", memory_request="96Mi", cpu_limit="500m", memory_limit="256Mi"
            ),
        )
        return hardened_pod_template(
            labels=LABELS,
            # A new policy, parameter or certificate rolls the pods (OPA reads them at start).
            annotations={
                "ztml.dev/policy-digest": bundle.digest,
                "ztml.dev/tls-cert-digest": args.settings.tls.cert_digest,
            },
            containers=[opa],
            volumes=[*volumes, *tls.volumes],
            service_account_name=account,
        )

    @staticmethod
    def _configuration(
        name: str,
        settings: AdmissionConfig,
        service: k8s.core.v1.Service,
        opts: pulumi.ResourceOptions,
    ) -> k8s.admissionregistration.v1.ValidatingWebhookConfiguration:
        admission = k8s.admissionregistration.v1
        return admission.ValidatingWebhookConfiguration(
            f"{name}-configuration",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=settings.namespace, labels=LABELS),
            webhooks=[
                admission.ValidatingWebhookArgs(
                    name=WEBHOOK_NAME,
                    admission_review_versions=["v1"],
                    side_effects="None",
                    failure_policy="Fail",
                    match_policy="Equivalent",
                    timeout_seconds=TIMEOUT_SECONDS,
                    client_config=admission.WebhookClientConfigArgs(
                        ca_bundle=settings.tls.ca_bundle_base64,
                        service=admission.ServiceReferenceArgs(
                            namespace=service.metadata.namespace,
                            name=service.metadata.name,
                            port=SERVICE_PORT,
                            path=WEBHOOK_PATH,
                        ),
                    ),
                    namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                        match_labels={ADMISSION_LABEL: settings.namespace},
                        match_expressions=[
                            k8s.meta.v1.LabelSelectorRequirementArgs(
                                key="kubernetes.io/metadata.name",
                                operator="NotIn",
                                values=[*SYSTEM_NAMESPACES, settings.namespace],
                            )
                        ],
                    ),
                    rules=[
                        admission.RuleWithOperationsArgs(
                            api_groups=[group],
                            api_versions=["v1"],
                            operations=["CREATE", "UPDATE"],
                            resources=list(resources),
                            scope="Namespaced",
                        )
                        for group, resources in RULES
                    ],
                )
            ],
            opts=opts,
        )
