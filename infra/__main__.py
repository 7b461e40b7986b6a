"""The ztml stack: read the typed config, pass the deploy gate, wire the components."""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

# `pulumi` runs this directory with runpy, which puts it first on sys.path: modules here
# (secrets.py, config.py) must not shadow the standard library or other packages,
# and `infra` must resolve as a package from the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import pulumi
import pulumi_kubernetes as k8s

from infra.admission import AdmissionWebhook, AdmissionWebhookArgs
from infra.config import MODEL_SERVICE, StackConfig, read_stack_config
from infra.errors import InfraError
from infra.gate import enforce_deploy_gate, enforce_models_gate
from infra.model_service import (
    MODEL_PATH,
    MODEL_POD_LABELS,
    PACKAGES_DIR,
    SERVICE_PORT,
    ModelService,
    ModelServiceArgs,
    model_labels,
)
from infra.namespace import Namespace, NamespaceArgs
from infra.network import Network, NetworkArgs
from infra.policy_engine import PolicyEngine, PolicyEngineArgs, load_policy_bundle
from infra.records import POSTGRES_LABELS, Records, RecordsArgs
from infra.secrets import TRUST_DIR, TrustSecrets, TrustSecretsArgs
from service.toolchain.paths import POLICIES_DIR


def main(config: StackConfig | None = None) -> None:
    """Declare the stack; the deploy gate runs before the model services are declared.

    The primary model and each extra model of ``ztml:models`` pass the gate on their own.
    A bad configuration value or a refused model ends the run before any resource is
    declared with one error that names the key, or the model and every reason of its
    refusal, and no traceback (:class:`pulumi.RunError`, the engine's own error path).
    """
    try:
        cfg = config if config is not None else read_stack_config()
        gate = enforce_deploy_gate(cfg)
        extra_gates = enforce_models_gate(cfg)
    except InfraError as err:
        # The cause stays attached for callers in-process; the engine prints str() only.
        raise pulumi.RunError(str(err)) from err
    provider = k8s.Provider("ztml-k8s", context=cfg.kube_context)
    opts = pulumi.ResourceOptions(providers={"kubernetes": provider})

    bundle = load_policy_bundle(POLICIES_DIR)
    # The admission webhook first: the stack's namespace (and so everything in it) is
    # created after the webhook configuration, so the stack passes its own webhook.
    webhook = (
        AdmissionWebhook(
            "ztml-admission",
            AdmissionWebhookArgs(settings=cfg.admission, image=cfg.opa_image, bundle=bundle),
            opts=opts,
        )
        if cfg.admission is not None
        else None
    )
    namespace = Namespace(
        "ztml",
        NamespaceArgs(
            name=cfg.namespace,
            max_pods=cfg.max_replicas,
            models=1 + len(cfg.models),
            labels=webhook.protected_labels if webhook else {},
        ),
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[webhook.configuration] if webhook else [])
        ),
    )
    ns = namespace.name
    Network(
        "ztml",
        NetworkArgs(
            namespace=ns,
            model_labels=MODEL_POD_LABELS,
            service_port=SERVICE_PORT,
            client_namespaces=cfg.client_namespaces,
            postgres_labels=POSTGRES_LABELS if cfg.uses_postgres else None,
        ),
        opts=opts,
    )
    trust = TrustSecrets(
        "ztml-trust",
        TrustSecretsArgs(
            namespace=ns,
            issuers=cfg.trusted_issuers,
            audience=cfg.jwt_audience,
            trainer_key_ids=cfg.trainer_key_ids,
            approver_key_ids=cfg.approver_key_ids,
            trust_keys=cfg.trust_keys,
            oms_signer_keys=cfg.oms_signer_keys,
        ),
        opts=opts,
    )
    opa = PolicyEngine(
        "ztml-opa",
        PolicyEngineArgs(
            namespace=ns,
            image=cfg.opa_image,
            bundle=bundle,
        ),
        opts=opts,
    )
    records = Records(
        "ztml-records",
        RecordsArgs(
            namespace=ns,
            replicas=cfg.replicas,
            storage_class=cfg.storage_class,
            storage_size=cfg.storage_size,
            ledger_export_json=gate.export_text,
            postgres_image=cfg.postgres_image,
            postgres_password=cfg.postgres_password,
        ),
        opts=opts,
    )
    witness_env: dict[str, pulumi.Input[str]] = (
        {"ZTML_LEDGER_WITNESS_KEYS": " ".join(cfg.ledger_witness_keys)}
        if cfg.ledger_witness_keys
        else {}
    )

    def model_service(name: str | None, digest: str) -> ModelService:
        """One model's Deployment and Service: the primary model's without a name."""
        return ModelService(
            "ztml-model" if name is None else f"ztml-model-{name}",
            ModelServiceArgs(
                namespace=ns,
                image=cfg.image,
                model_digest=digest,
                replicas=cfg.replicas,
                max_replicas=cfg.max_replicas,
                parts=(opa.pod_parts, records.model_parts(name), trust.pod_parts),
                init_command=records.seed_command(trust_dir=TRUST_DIR, model=name),
                tls=cfg.service_tls,
                env=witness_env,
                workload_name=MODEL_SERVICE if name is None else name,
                model_path=MODEL_PATH if name is None else f"{PACKAGES_DIR}/{name}",
                labels=model_labels(name),
            ),
            opts=opts,
        )

    model = model_service(None, gate.digest)
    extras = {name: model_service(name, passed.digest) for name, passed in extra_gates.items()}

    pulumi.export("namespace", ns)
    pulumi.export("modelDigest", gate.digest)
    pulumi.export("policyDigest", opa.policy_digest)
    pulumi.export("serviceName", model.service_name)
    pulumi.export("servicePort", model.service_port)
    pulumi.export("deploymentName", model.deployment_name)
    pulumi.export("ledgerBackend", records.backend)
    pulumi.export(
        "models",
        {
            name: {
                "serviceName": service.service_name,
                "servicePort": service.service_port,
                "deploymentName": service.deployment_name,
                "modelDigest": extra_gates[name].digest,
            }
            for name, service in extras.items()
        },
    )
    if webhook is not None:
        pulumi.export("admissionNamespace", webhook.namespace)
        pulumi.export("admissionWebhookConfiguration", webhook.configuration_name)


if __name__ == "__main__":
    main()
