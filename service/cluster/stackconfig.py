"""The stack configuration that deploys ztml onto the local cluster from a ZTML_HOME.

``ztml cluster config`` writes the ``ztml:*`` values of ``Pulumi.k3d.yaml`` with every
placeholder filled from what this machine has: the images ``ztml cluster images``
imported (digest references), the approved model's digest, the trainer, approver,
issuer and OMS signer public keys of ``$ZTML_HOME/keys``, and a verified ledger export
written beside the configuration.

The admission webhook's settings too: the addresses the API server (a process on this
machine) connects from, the registry of the locally built images as an admission
parameter, and serving certificates for the webhook's Service and for the model
service's port, issued by a local CA kept in ``$ZTML_HOME/cluster-ca`` (made once; keys
``0600``). Those certificates' private keys are the secrets the configuration holds (the
file is written ``0600``, and ``python -m infra.automation`` stores them as Pulumi
secrets), with the PostgreSQL password when scaled out; every other key that leaves the
home is public.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.cluster.errors import ClusterError
from service.cluster.layout import CONTEXT, NODE_POD_SUBNET, node_ip
from service.toolchain.paths import POLICIES_DIR, PROJECT_ROOT

EXAMPLE_STACK = PROJECT_ROOT / "Pulumi.k3d.yaml"
IMAGE_KEYS = {"image": "model-service", "opaImage": "opa", "postgresImage": "postgres"}
CA_DIR = "cluster-ca"
# Reissue what expires sooner than this (the local CA and certificates last a year).
RENEW_BEFORE = dt.timedelta(days=30)


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


def package_models(packages: Sequence[Path]) -> list[dict[str, str]]:
    """Return ``ztml:models`` for model packages: each one's name and weights digest.

    Raises:
        StackConfigError: a directory is not a model package, or its name cannot name a
            Deployment.
    """
    from service.app.gate import weights_file
    from service.cluster.errors import ClusterToolError
    from service.cluster.imagebuild import package_names
    from service.ledger import hash_artifact

    try:
        named = package_names(packages)
    except ClusterToolError as err:
        raise StackConfigError(str(err)) from None
    return [
        {"name": name, "digest": hash_artifact(weights_file(package))[0]}
        for name, package in named.items()
    ]


def local_stack_config(
    home: Path,
    images: Mapping[str, str],
    *,
    model_digest: str,
    ledger_export: Path,
    replicas: int = 1,
    models: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Return the ``ztml:*`` configuration for the local cluster.

    Args:
        home: The ZTML_HOME whose keys signed the ledger and issue tokens.
        images: Image name -> digest reference (``ztml cluster images``).
        model_digest: The approved model's digest.
        ledger_export: The verified ledger export the deploy gate reads.
        replicas: Model service replicas (more than one adds PostgreSQL).
        models: Further models (``ztml:models``): each one's name and digest.

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
    values |= admission_values(home, namespace=str(values["namespace"]), images=images)
    if models:
        values["models"] = [dict(model) for model in models]
    values |= service_tls_values(
        home, namespace=str(values["namespace"]), models=[m["name"] for m in models]
    )
    if replicas == 1:
        values.pop("postgresImage", None)
    else:
        import secrets

        # Scaled out, the ledger lives in PostgreSQL: a fresh password, stored by
        # `infra.automation` as a Pulumi secret (the file itself is written 0600).
        values["postgresPassword"] = secrets.token_urlsafe(24)
    return {f"ztml:{key}": value for key, value in values.items()}


@dataclass(frozen=True)
class ServingCertificate:
    """A serving certificate (PEM), its private key (PEM) and the CA that issued it."""

    cert_pem: str
    key_pem: str
    ca_pem: str


def _expires_soon(path: Path, now: dt.datetime) -> bool:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - RENEW_BEFORE <= now


def _names_other_hosts(path: Path, hosts: Sequence[str]) -> bool:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    return set(san.get_values_for_type(x509.DNSName)) != set(hosts)


def serving_certificate(home: Path, host: str, *aliases: str) -> ServingCertificate:
    """Return a certificate for ``host`` (and ``aliases``) from the home's local CA.

    Made once and reused.

    The CA (``$ZTML_HOME/cluster-ca/ca.crt``, ``ca.key``) is made on first use; each host
    gets its own certificate file, reused until it is due for renewal or until the names
    it must carry change (another model's Service added). A CA due for renewal is
    replaced together with every certificate it issued.
    """
    from service.cluster.pki import Authority, Identity

    directory = home / CA_DIR
    authority = Authority(directory, "ca")
    now = dt.datetime.now(dt.UTC)
    if authority.cert_path.exists() and _expires_soon(authority.cert_path, now):
        for stale in (*directory.glob("*.crt"), *directory.glob("*.key")):
            stale.unlink()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    authority.ensure()
    name = "server-" + host.replace(".", "_")
    cert_path = directory / f"{name}.crt"
    if cert_path.exists() and (
        _expires_soon(cert_path, now) or _names_other_hosts(cert_path, (host, *aliases))
    ):
        cert_path.unlink()
        (directory / f"{name}.key").unlink(missing_ok=True)
    crt, key = authority.issue(Identity(name, host, server=True, hosts=(host, *aliases)))
    return ServingCertificate(
        cert_pem=crt.read_text(encoding="utf-8"),
        key_pem=key.read_text(encoding="utf-8"),
        ca_pem=authority.cert_path.read_text(encoding="utf-8"),
    )


def api_server_cidrs() -> list[str]:
    """Return where the local cluster's API server connects to a pod from.

    The API server is a process on this machine. It reaches a webhook's Service through
    kube-proxy, which masquerades traffic from outside the pod network to a Service, so
    the pod sees the pod bridge's own address (the subnet's gateway); a connection
    straight to a pod would come from the node's address. Both, as /32s.
    """
    gateway = ipaddress.ip_network(NODE_POD_SUBNET)[1]
    return [f"{node_ip()}/32", f"{gateway}/32"]


def _registries(images: Mapping[str, str]) -> list[str]:
    """The registry prefixes (``ztml.local/``) of the images, in order, without repeats."""
    prefixes: list[str] = []
    for reference in images.values():
        prefix = reference.split("/", 1)[0] + "/"
        if "/" in reference and prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def service_tls_values(home: Path, *, namespace: str, models: Sequence[str] = ()) -> dict[str, Any]:
    """Return the model services' TLS ``ztml:*`` values: a certificate for their DNS names.

    One certificate names the primary model's Service and each extra model's. Clients in
    the cluster verify it with the local CA (``serviceCaBundle``,
    ``$ZTML_HOME/cluster-ca/ca.crt``).
    """
    from infra.config import service_hosts

    certificate = serving_certificate(home, *service_hosts(namespace, *models))
    return {
        "serviceTlsCert": certificate.cert_pem,
        "serviceTlsKey": certificate.key_pem,
        "serviceCaBundle": certificate.ca_pem,
    }


def admission_values(home: Path, *, namespace: str, images: Mapping[str, str]) -> dict[str, Any]:
    """Return the admission webhook's ``ztml:*`` values (without the prefix) for this cluster.

    The local images' registry is allowed by the webhook only (``admissionParameters``
    adds it to the registries of policies/data/admission.json), since no other cluster
    can pull ``ztml.local/`` images.
    """
    from infra.config import admission_host, admission_namespace

    certificate = serving_certificate(home, admission_host(admission_namespace(namespace)))
    settings = json.loads((POLICIES_DIR / "data" / "admission.json").read_text(encoding="utf-8"))
    allowed: list[str] = list(settings["admission"]["allowed_registries"])
    allowed += [r for r in _registries(images) if r not in allowed]
    return {
        "admissionWebhook": "true",
        "apiServerCidrs": api_server_cidrs(),
        "admissionTlsCert": certificate.cert_pem,
        "admissionTlsKey": certificate.key_pem,
        "admissionCaBundle": certificate.ca_pem,
        "admissionParameters": {"allowed_registries": allowed},
    }


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
