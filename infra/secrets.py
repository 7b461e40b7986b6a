"""Trust material from Pulumi config secrets, delivered to pods as Secret files only.

Two Secrets:

- ``issuers.json``: the JWT issuers the service accepts, a list of
  ``{"iss", "kid", "public_key_pem"}``;
- ``trust.json``: the ledger trust the service applies when it verifies the ledger,
  ``{"trainer_key_ids", "approver_key_ids", "keys": [{"key_id", "public_key_pem"}]}``.

Both documents are built from config values that stay marked secret end to end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.config import TrustedIssuer, TrustKey
from infra.hardening import Mount, PodParts, SecretVolume

ISSUERS_FILE = "issuers.json"
TRUST_FILE = "trust.json"
ISSUERS_DIR = "/etc/ztml/issuers"
TRUST_DIR = "/etc/ztml/trust"


@dataclass(frozen=True)
class TrustSecretsArgs:
    """Inputs of :class:`TrustSecrets`.

    Attributes:
        namespace: Namespace of the Secrets.
        issuers: Trusted JWT issuers.
        trainer_key_ids: Key ids trusted to register and evaluate models.
        approver_key_ids: Key ids trusted to approve and revoke models.
        trust_keys: Public keys of ledger signers.
    """

    namespace: pulumi.Input[str]
    issuers: Sequence[TrustedIssuer]
    trainer_key_ids: Sequence[str]
    approver_key_ids: Sequence[str]
    trust_keys: Sequence[TrustKey]


def issuers_document(issuers: Sequence[TrustedIssuer]) -> str:
    """Return the ``issuers.json`` text for the given issuers."""
    return json.dumps(
        [{"iss": i.iss, "kid": i.kid, "public_key_pem": i.public_key_pem} for i in issuers],
        indent=2,
        sort_keys=True,
    )


def trust_document(
    *, trainer_key_ids: Sequence[str], approver_key_ids: Sequence[str], keys: Sequence[TrustKey]
) -> str:
    """Return the ``trust.json`` text for the ledger trust."""
    return json.dumps(
        {
            "trainer_key_ids": list(trainer_key_ids),
            "approver_key_ids": list(approver_key_ids),
            "keys": [{"key_id": k.key_id, "public_key_pem": k.public_key_pem} for k in keys],
        },
        indent=2,
        sort_keys=True,
    )


class TrustSecrets(pulumi.ComponentResource):
    """Secrets holding the JWT issuer keys and the ledger trust.

    Attributes:
        issuers_secret_name: Secret with ``issuers.json``.
        trust_secret_name: Secret with ``trust.json``.
        pod_parts: The Secret volumes, their mounts and the ``*_FILE`` settings.
    """

    issuers_secret_name: pulumi.Output[str]
    trust_secret_name: pulumi.Output[str]
    pod_parts: PodParts

    def __init__(
        self, name: str, args: TrustSecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:secrets:TrustSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        metadata = k8s.meta.v1.ObjectMetaArgs(
            namespace=args.namespace, labels={"app.kubernetes.io/part-of": "ztml"}
        )
        self.issuers_secret_name = k8s.core.v1.Secret(
            f"{name}-issuers",
            metadata=metadata,
            type="Opaque",
            string_data={ISSUERS_FILE: pulumi.Output.secret(issuers_document(args.issuers))},
            opts=child,
        ).metadata.name
        self.trust_secret_name = k8s.core.v1.Secret(
            f"{name}-trust",
            metadata=metadata,
            type="Opaque",
            string_data={
                TRUST_FILE: pulumi.Output.secret(
                    trust_document(
                        trainer_key_ids=args.trainer_key_ids,
                        approver_key_ids=args.approver_key_ids,
                        keys=args.trust_keys,
                    )
                )
            },
            opts=child,
        ).metadata.name
        self.pod_parts = PodParts(
            volumes=(
                SecretVolume("jwt-issuers", self.issuers_secret_name),
                SecretVolume("ledger-trust", self.trust_secret_name),
            ),
            mounts=(Mount("jwt-issuers", ISSUERS_DIR), Mount("ledger-trust", TRUST_DIR)),
            env={
                "ZTML_JWT_ISSUERS_FILE": f"{ISSUERS_DIR}/{ISSUERS_FILE}",
                "ZTML_LEDGER_TRUST_FILE": f"{TRUST_DIR}/{TRUST_FILE}",
            },
        )
        self.register_outputs(
            {
                "issuers_secret_name": self.issuers_secret_name,
                "trust_secret_name": self.trust_secret_name,
            }
        )
