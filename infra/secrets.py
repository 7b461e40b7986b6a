"""Trust material from Pulumi config secrets, delivered to pods as Secret files only.

Two Secrets, in the formats the model service reads:

- ``issuers.json`` (mounted at ``$ZTML_HOME/issuers.json``): the JWT audience and the
  issuers the service accepts, ``{"audience", "issuers": [{"iss", "keys": [{"kid",
  "alg", "public_key_pem"}]}]}``;
- the ledger trust directory (``ZTML_TRUST_DIR``): one ``trainer-<id>.pub`` or
  ``approver-<id>.pub`` PEM file per trusted ledger key, so the service knows both the
  keys and their roles when it verifies its ledger and asks the provenance policy;
- the trusted OMS signers (``ZTML_OMS_SIGNERS_DIR``, a third Secret): one
  ``oms-signer-<n>.pub`` per key trusted to sign the model's OMS bundle, checked by the
  pod's init step and the service's start.

Both are built from config values that stay marked secret end to end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from infra.config import TrustedIssuer, TrustKey
from infra.hardening import Mount, PodParts, SecretVolume

ISSUERS_FILE = "issuers.json"
ZTML_HOME = "/var/lib/ztml"
TRUST_DIR = "/etc/ztml/trust"
OMS_SIGNERS_DIR = "/etc/ztml/oms-signers"


@dataclass(frozen=True)
class TrustSecretsArgs:
    """Inputs of :class:`TrustSecrets`.

    Attributes:
        namespace: Namespace of the Secrets.
        issuers: Trusted JWT issuers.
        audience: The ``aud`` claim the service accepts.
        trainer_key_ids: Key ids trusted to register and evaluate models.
        approver_key_ids: Key ids trusted to approve and revoke models.
        trust_keys: Public keys of ledger signers.
        oms_signer_keys: PEM public keys trusted to sign the model's OMS bundle.
    """

    namespace: pulumi.Input[str]
    issuers: Sequence[TrustedIssuer]
    audience: str
    trainer_key_ids: Sequence[str]
    approver_key_ids: Sequence[str]
    trust_keys: Sequence[TrustKey]
    oms_signer_keys: Sequence[str] = ()


def issuers_document(issuers: Sequence[TrustedIssuer], *, audience: str) -> str:
    """Return the service's ``issuers.json`` text: issuers grouped by ``iss``."""
    grouped: dict[str, list[dict[str, str]]] = {}
    for issuer in issuers:
        grouped.setdefault(issuer.iss, []).append(
            {"kid": issuer.kid, "alg": issuer.alg, "public_key_pem": issuer.public_key_pem}
        )
    document = {
        "audience": audience,
        "issuers": [{"iss": iss, "keys": keys} for iss, keys in grouped.items()],
    }
    return json.dumps(document, indent=2, sort_keys=True)


def trust_files(
    *, trainer_key_ids: Sequence[str], approver_key_ids: Sequence[str], keys: Sequence[TrustKey]
) -> dict[str, str]:
    """Return the trust directory's files: ``<role>-<hex>.pub`` -> PEM.

    A key in both roles gets both files; a key in neither is trusted as ``signer-``.
    """
    files: dict[str, str] = {}
    for key in keys:
        suffix = key.key_id.split(":", 1)[1]
        roles = [
            role
            for role, ids in (("trainer", trainer_key_ids), ("approver", approver_key_ids))
            if key.key_id in ids
        ] or ["signer"]
        for role in roles:
            files[f"{role}-{suffix}.pub"] = key.public_key_pem
    return files


def _secret_text(value: str) -> pulumi.Output[str]:
    return cast(pulumi.Output[str], pulumi.Output.secret(cast(Any, value)))


class TrustSecrets(pulumi.ComponentResource):
    """Secrets holding the JWT issuer keys and the ledger trust.

    Attributes:
        issuers_secret_name: Secret with ``issuers.json``.
        trust_secret_name: Secret with the ``*.pub`` trust files.
        oms_signers_secret_name: Secret with the trusted OMS signers' ``*.pub`` files.
        pod_parts: The Secret volumes, their mounts and the ``*_FILE`` settings.
    """

    issuers_secret_name: pulumi.Output[str]
    trust_secret_name: pulumi.Output[str]
    oms_signers_secret_name: pulumi.Output[str]
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
            string_data={
                ISSUERS_FILE: _secret_text(issuers_document(args.issuers, audience=args.audience))
            },
            opts=child,
        ).metadata.name
        self.trust_secret_name = k8s.core.v1.Secret(
            f"{name}-trust",
            metadata=metadata,
            type="Opaque",
            string_data={
                file_name: _secret_text(pem)
                for file_name, pem in trust_files(
                    trainer_key_ids=args.trainer_key_ids,
                    approver_key_ids=args.approver_key_ids,
                    keys=args.trust_keys,
                ).items()
            },
            opts=child,
        ).metadata.name
        self.oms_signers_secret_name = k8s.core.v1.Secret(
            f"{name}-oms-signers",
            metadata=metadata,
            type="Opaque",
            string_data={
                f"oms-signer-{index}.pub": _secret_text(pem)
                for index, pem in enumerate(args.oms_signer_keys)
            },
            opts=child,
        ).metadata.name
        self.pod_parts = PodParts(
            volumes=(
                SecretVolume("jwt-issuers", self.issuers_secret_name),
                SecretVolume("ledger-trust", self.trust_secret_name),
                SecretVolume("oms-signers", self.oms_signers_secret_name),
            ),
            mounts=(
                Mount("jwt-issuers", f"{ZTML_HOME}/{ISSUERS_FILE}", sub_path=ISSUERS_FILE),
                Mount("ledger-trust", TRUST_DIR),
                Mount("oms-signers", OMS_SIGNERS_DIR),
            ),
            env={"ZTML_TRUST_DIR": TRUST_DIR, "ZTML_OMS_SIGNERS_DIR": OMS_SIGNERS_DIR},
        )
        self.register_outputs(
            {
                "issuers_secret_name": self.issuers_secret_name,
                "trust_secret_name": self.trust_secret_name,
                "oms_signers_secret_name": self.oms_signers_secret_name,
            }
        )
