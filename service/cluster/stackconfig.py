"""The stack configuration that deploys ztml onto the local cluster from a ZTML_HOME.

``ztml cluster config`` writes the ``ztml:*`` values of ``Pulumi.k3d.yaml`` with every
placeholder filled from what this machine has: the images ``ztml cluster images``
imported (digest references), the approved model's digest, the trainer, approver,
issuer and OMS signer public keys of ``$ZTML_HOME/keys``, and a verified ledger export
written beside the configuration. Only public keys leave the home; nothing secret is
written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from service.cluster.errors import ClusterError
from service.cluster.layout import CONTEXT
from service.toolchain.paths import PROJECT_ROOT

EXAMPLE_STACK = PROJECT_ROOT / "Pulumi.k3d.yaml"
IMAGE_KEYS = {"image": "model-service", "opaImage": "opa", "postgresImage": "postgres"}


class StackConfigError(ClusterError):
    """The local stack's configuration cannot be made (the message names what is missing)."""


def example_values() -> dict[str, Any]:
    """Return the ``ztml:*`` values of ``Pulumi.k3d.yaml`` (keys without the prefix)."""
    document = yaml.safe_load(EXAMPLE_STACK.read_text(encoding="utf-8"))
    return {key.removeprefix("ztml:"): value for key, value in document["config"].items()}


def _public_pem(path: Path) -> str:
    if not path.is_file():
        raise StackConfigError(
            f"{path} is missing: create the keys with `ztml keys init` (or run `ztml up` once)."
        )
    return path.read_text(encoding="utf-8")


def local_stack_config(
    home: Path,
    images: Mapping[str, str],
    *,
    model_digest: str,
    ledger_export: Path,
    replicas: int = 1,
) -> dict[str, Any]:
    """Return the ``ztml:*`` configuration for the local cluster.

    Args:
        home: The ZTML_HOME whose keys signed the ledger and issue tokens.
        images: Image name -> digest reference (``ztml cluster images``).
        model_digest: The approved model's digest.
        ledger_export: The verified ledger export the deploy gate reads.
        replicas: Model service replicas (more than one adds PostgreSQL).

    Raises:
        StackConfigError: an image or key is missing.
    """
    from service.authn.issuer import local_signer
    from service.authn.trust import LOCAL_ISSUER
    from service.keys.store import key_id, load_public_key, public_pem

    values = example_values()
    values["target"] = CONTEXT
    for key, name in IMAGE_KEYS.items():
        if name not in images:
            raise StackConfigError(
                f"no {name} image imported: run `ztml cluster images --model <model dir>` first."
            )
        values[key] = images[name]
    keys = home / "keys"
    trust = []
    for role in ("trainer", "approver"):
        pem = _public_pem(keys / f"{role}.pub")
        trust.append({"keyId": key_id(load_public_key(keys / f"{role}.pub")), "publicKey": pem})
    issuer = local_signer(home)
    signers = sorted((keys / "oms_signers").glob("*.pub"))
    if not signers:
        raise StackConfigError(
            f"no trusted OMS signer key in {keys / 'oms_signers'}: run `ztml keys init` "
            "(it makes ztml's signing key) or add the signer's public key there."
        )
    values |= {
        "omsSignerKeys": [path.read_text(encoding="utf-8") for path in signers],
        "modelDigest": model_digest,
        "ledgerExport": str(ledger_export),
        "storageClass": "local-path",
        "replicas": str(replicas),
        "maxReplicas": str(replicas),
        "trainerKeyIds": [trust[0]["keyId"]],
        "approverKeyIds": [trust[1]["keyId"]],
        "ledgerTrustKeys": trust,
        "trustedIssuers": [
            {
                "iss": LOCAL_ISSUER,
                "kid": issuer.key_id,
                "alg": "EdDSA",
                "publicKey": public_pem(issuer.public_key),
            }
        ],
    }
    if replicas == 1:
        values.pop("postgresImage", None)
    else:
        import secrets

        # Scaled out, the ledger lives in PostgreSQL: a fresh password, stored by
        # `infra.automation` as a Pulumi secret (the file itself is written 0600).
        values["postgresPassword"] = secrets.token_urlsafe(24)
    return {f"ztml:{key}": value for key, value in values.items()}


def write_ledger_export(home: Path, out: Path) -> None:
    """Verify the home's ledger with its keys and write the export the gate reads.

    Raises:
        StackConfigError: the ledger does not verify (nothing is written).
    """
    from service.keys.canonical import canonical_json
    from service.keys.errors import KeyError_
    from service.keys.store import TrustStore
    from service.ledger import LedgerError, open_ledger

    try:
        store = TrustStore.from_trust_directory(home / "keys")
        with open_ledger(home / "ledger.db", create=False) as ledger:
            document = ledger.export(store)
    except (LedgerError, KeyError_, OSError) as err:
        raise StackConfigError(f"the ledger in {home} cannot be exported: {err}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(canonical_json(document) + b"\n")


def dump(config: Mapping[str, Any]) -> str:
    """Return the configuration as the JSON ``python -m infra.automation --config`` reads."""
    return json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
