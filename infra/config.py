"""The stack's typed, validated configuration, read once.

Every ``ztml:<key>`` value is checked here; a bad value raises :class:`ConfigError` naming
the key and the accepted values, which fails ``pulumi preview`` before anything is
declared. Secrets (issuer and trust public keys, the PostgreSQL password) keep their
Pulumi secret marking: they are wrapped in ``pulumi.Output.secret`` and only ever reach
the cluster as Secret files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from infra.errors import ConfigError
from infra.tls import TlsIdentity, TlsKeys, parse_tls_identity
from service.digests import DIGEST_FORM, DIGEST_PATTERN, DIGEST_RE, KEY_ID_RE
from service.gate import Requirements, load_requirements
from service.toolchain.paths import POLICIES_DIR

PROJECT = "ztml"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

IMAGE_RE = re.compile(rf"[a-z0-9][a-z0-9.\-_/:]*@{DIGEST_PATTERN}")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
CONTEXT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/\-]{0,252}$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)$")
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
PEM_PUBLIC_RE = re.compile(
    r"^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n?$"
)

Target = Literal["k3d"] | str
# Keys of earlier releases: set, they fail with the reason and the fix.
REMOVED_KEYS: dict[str, str] = {
    "opaTls": "OPA is reached over a Unix socket in a memory-backed volume inside the model "
    "pod, so there is no OPA TLS to configure; remove it with `pulumi config rm opaTls`",
}
JWT_ALGORITHMS = ("EdDSA", "ES256")
MAX_REPLICAS = 20
CONFIG_KEYS: tuple[str, ...] = (
    "target",
    "k3dCluster",
    "namespace",
    "image",
    "opaImage",
    "postgresImage",
    "modelDigest",
    "models",
    "replicas",
    "maxReplicas",
    "minRobustAccuracy",
    "epsilon",
    "attack",
    "minSteps",
    "minRestarts",
    "trustedIssuers",
    "trainerKeyIds",
    "approverKeyIds",
    "ledgerTrustKeys",
    "omsSignerKeys",
    "ledgerExport",
    "ledgerWitnessKeys",
    "storageClass",
    "storageSize",
    "clientNamespaces",
    "jwtAudience",
    "postgresPassword",
    "admissionWebhook",
    "apiServerCidrs",
    "admissionTlsCert",
    "admissionTlsKey",
    "admissionCaBundle",
    "admissionParameters",
    "serviceTlsCert",
    "serviceTlsKey",
    "serviceCaBundle",
    "insecurePlainHttp",
    *REMOVED_KEYS,
)
# The admission webhook's Service, in its own namespace ``<namespace>-admission``; its
# serving certificate must name ``<service>.<namespace>-admission.svc``.
ADMISSION_SERVICE = "ztml-admission"
# The model service's stable name (its Service and Deployment), which clients dial.
MODEL_SERVICE = "ztml-model"
# An extra model's name names its Service and Deployment too, so it is a DNS label; the
# ``ztml-`` prefix is the stack's own (the primary model's ``ztml-model``, the records').
MODEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
RESERVED_PREFIX = "ztml-"
ADMISSION_NAMESPACE_SUFFIX = "-admission"


@dataclass(frozen=True)
class TrustedIssuer:
    """A JWT issuer the service accepts.

    Attributes:
        iss: The ``iss`` claim value.
        kid: The key id in the token header.
        public_key_pem: The issuer's public key (PEM, SubjectPublicKeyInfo).
        alg: ``EdDSA`` (Ed25519 key) or ``ES256`` (ECDSA P-256 key).
    """

    iss: str
    kid: str
    public_key_pem: str
    alg: str = "EdDSA"


@dataclass(frozen=True)
class TrustKey:
    """A ledger signer's public key the service uses to verify the ledger.

    Attributes:
        key_id: ``ed25519:<16 hex>`` as computed by ``service.keys.key_id``.
        public_key_pem: The public key (PEM).
    """

    key_id: str
    public_key_pem: str


@dataclass(frozen=True)
class ExtraModel:
    """A further model the stack serves, each in its own Deployment (``ztml:models``).

    Attributes:
        name: The model's name (its contract's ``name``): the name of its Deployment and
            Service and of its directory in the image (``/opt/ztml/models/<name>``).
        digest: Its weights digest, which must pass the deploy gate on its own.
    """

    name: str
    digest: str


@dataclass(frozen=True)
class AdmissionConfig:
    """The admission webhook's settings (``ztml:admissionWebhook`` on).

    Attributes:
        namespace: The webhook's own namespace (``<namespace>-admission``).
        service: The webhook's Service name.
        api_server_cidrs: Where the API server connects from; the only ingress allowed.
        tls: The webhook's serving certificate, key and the CA the API server trusts.
        parameters: Admission settings for the webhook only, overriding
            policies/data/admission.json (Gatekeeper-style parameters).
    """

    namespace: str
    service: str
    api_server_cidrs: tuple[str, ...]
    tls: TlsIdentity
    parameters: dict[str, Any]

    @property
    def host(self) -> str:
        """The name the API server dials (and the certificate names)."""
        return admission_host(self.namespace)


@dataclass(frozen=True)
class StackConfig:
    """Everything the program needs, validated.

    Attributes:
        target: ``k3d`` or the name of a kubeconfig context.
        k3d_cluster: The k3d cluster name (context ``k3d-<name>``) when target is k3d.
        namespace: Namespace for every namespaced resource.
        image: The model service image, pinned by digest.
        opa_image: The OPA image, pinned by digest.
        postgres_image: The PostgreSQL image, pinned by digest (needed when replicas > 1).
        model_digest: The approved model artifact digest the service must serve.
        models: Further models, each served by its own Deployment and Service.
        replicas: Model service replicas (1..20).
        max_replicas: Upper bound for the HorizontalPodAutoscaler.
        requirements: Deploy-gate requirements: those of policies/data/provenance.json,
            each default overridden by its ``ztml:*`` key when set (the per-modality
            overrides are provenance.json's).
        trusted_issuers: JWT issuers accepted by the service.
        jwt_audience: The ``aud`` claim the service accepts.
        trainer_key_ids: Ledger key ids trusted to register and evaluate models.
        approver_key_ids: Ledger key ids trusted to approve and revoke models.
        trust_keys: Public keys of ledger signers, mounted for the service's own checks.
        oms_signer_keys: PEM public keys (EC) trusted to sign the model's OMS bundle,
            mounted for the pod's init step and the service's start.
        ledger_export: The ``ztml ledger export`` file the deploy gate reads.
        ledger_witness_keys: ``cosignature/v1`` vkeys of the witnesses that must all have
            cosigned the export's checkpoint (the program's gate, the pod's init step and
            the service's start require it); empty: no cosignature is required.
        storage_class: StorageClass for the records volume; None uses the cluster default.
        storage_size: Size of the records volume.
        client_namespaces: Extra namespaces (e.g. an ingress controller's) allowed to
            reach the model service port.
        postgres_password: PostgreSQL password (secret), set when replicas > 1.
        admission: The admission webhook's settings; None when ``ztml:admissionWebhook``
            is false.
        service_tls: The model service's serving certificate, its key and the CA clients
            trust (``ztml:serviceTlsCert``, ``serviceTlsKey``, ``serviceCaBundle``); None
            only with ``ztml:insecurePlainHttp`` true.
    """

    target: str
    k3d_cluster: str
    namespace: str
    image: str
    opa_image: str
    postgres_image: str | None
    model_digest: str
    replicas: int
    max_replicas: int
    requirements: Requirements
    trusted_issuers: tuple[TrustedIssuer, ...]
    jwt_audience: str
    trainer_key_ids: tuple[str, ...]
    approver_key_ids: tuple[str, ...]
    trust_keys: tuple[TrustKey, ...]
    oms_signer_keys: tuple[str, ...]
    ledger_export: Path
    ledger_witness_keys: tuple[str, ...]
    storage_class: str | None
    storage_size: str
    client_namespaces: tuple[str, ...]
    postgres_password: str | None
    admission: AdmissionConfig | None = None
    service_tls: TlsIdentity | None = None
    models: tuple[ExtraModel, ...] = ()

    @property
    def kube_context(self) -> str:
        """The kubeconfig context the Kubernetes provider uses."""
        return f"k3d-{self.k3d_cluster}" if self.target == "k3d" else self.target

    @property
    def uses_postgres(self) -> bool:
        """True when the ledger lives in PostgreSQL (several replicas share it)."""
        return self.replicas > 1


def _key(key: str) -> str:
    return f"{PROJECT}:{key}"


class _Reader:
    """Reads raw string values and raises ConfigError naming the key."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self._raw = raw

    def text(self, key: str, default: str | None = None) -> str:
        value = self._raw.get(_key(key))
        if value is None or value == "":
            if default is None:
                raise ConfigError(
                    f"Missing config {_key(key)}: set it with `pulumi config set {key} ...` "
                    "(see Pulumi.k3d.yaml for an example)."
                )
            return default
        return value

    def optional(self, key: str) -> str | None:
        value = self._raw.get(_key(key))
        return value if value else None

    def matching(self, key: str, pattern: re.Pattern[str], accepted: str, **kw: str) -> str:
        value = self.text(key, kw.get("default"))
        if not pattern.fullmatch(value):
            raise ConfigError(f"Invalid config {_key(key)}={value!r}: accepted values: {accepted}.")
        return value

    def integer(self, key: str, *, default: int, low: int, high: int) -> int:
        value = self.text(key, str(default))
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise ConfigError(
                f"Invalid config {_key(key)}={value!r}: accepted values: an integer "
                f"from {low} to {high}."
            )
        return number

    def number(
        self, key: str, *, default: float, check: Callable[[float], bool], accepted: str
    ) -> float:
        value = self.text(key, str(default))
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not check(number):
            raise ConfigError(f"Invalid config {_key(key)}={value!r}: accepted values: {accepted}.")
        return number

    def json_list(self, key: str, *, required: bool) -> list[Any]:
        value = self.optional(key)
        if value is None:
            if required:
                raise ConfigError(
                    f"Missing config {_key(key)}: set it with "
                    f"`pulumi config set --path '{key}[0]' ...` (see Pulumi.k3d.yaml)."
                )
            return []
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"Invalid config {_key(key)}: not a list ({exc}).") from exc
        if not isinstance(parsed, list):
            raise ConfigError(f"Invalid config {_key(key)}: accepted values: a list.")
        return parsed


def _pinned_image(reader: _Reader, key: str, *, required: bool = True) -> str | None:
    if not required and reader.optional(key) is None:
        return None
    image = reader.matching(
        key, IMAGE_RE, f"an image reference pinned by digest, <registry>/<repo>@{DIGEST_FORM}"
    )
    if image.endswith(PLACEHOLDER_DIGEST):
        raise ConfigError(
            f"Invalid config {_key(key)}={image!r}: the digest is the all-zero placeholder; "
            "set the image's real digest (scripts/k3d-image prints it for the service image)."
        )
    return image


def _public_key(key: str, index: int, value: object) -> str:
    if not isinstance(value, str) or not PEM_PUBLIC_RE.fullmatch(value.strip() + "\n"):
        raise ConfigError(
            f"Invalid config {_key(key)}[{index}].publicKey: accepted values: a PEM public key "
            "(-----BEGIN PUBLIC KEY----- ...)."
        )
    return value.strip() + "\n"


def _issuers(reader: _Reader) -> tuple[TrustedIssuer, ...]:
    issuers: list[TrustedIssuer] = []
    for index, item in enumerate(reader.json_list("trustedIssuers", required=True)):
        if not isinstance(item, dict) or not {"iss", "kid", "publicKey"} <= set(item):
            raise ConfigError(
                f"Invalid config {_key('trustedIssuers')}[{index}]: accepted values: an object "
                "with iss, kid and publicKey."
            )
        iss, kid = item["iss"], item["kid"]
        if not isinstance(iss, str) or not iss or not isinstance(kid, str) or not kid:
            raise ConfigError(
                f"Invalid config {_key('trustedIssuers')}[{index}]: iss and kid must be "
                "non-empty strings."
            )
        alg = item.get("alg", "EdDSA")
        if alg not in JWT_ALGORITHMS:
            raise ConfigError(
                f"Invalid config {_key('trustedIssuers')}[{index}].alg={alg!r}: accepted "
                f"values: {', '.join(JWT_ALGORITHMS)}."
            )
        public_key = _public_key("trustedIssuers", index, item["publicKey"])
        issuers.append(TrustedIssuer(iss, kid, public_key, alg))
    if not issuers:
        raise ConfigError(
            f"Invalid config {_key('trustedIssuers')}: accepted values: at least one issuer."
        )
    return tuple(issuers)


def _key_ids(reader: _Reader, key: str) -> tuple[str, ...]:
    ids = reader.json_list(key, required=True)
    if not ids or not all(isinstance(i, str) and KEY_ID_RE.fullmatch(i) for i in ids):
        raise ConfigError(
            f"Invalid config {_key(key)}={ids!r}: accepted values: a non-empty list of key ids "
            "ed25519:<16 hex> (`ztml keys list` shows them)."
        )
    return tuple(ids)


def _trust_keys(reader: _Reader) -> tuple[TrustKey, ...]:
    keys: list[TrustKey] = []
    items = reader.json_list("ledgerTrustKeys", required=True)
    if not items:
        raise ConfigError(
            f"Invalid config {_key('ledgerTrustKeys')}: accepted values: at least one "
            "{keyId, publicKey} (the trainer and approver public keys)."
        )
    for index, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("keyId"), str)
            or not KEY_ID_RE.fullmatch(item["keyId"])
        ):
            raise ConfigError(
                f"Invalid config {_key('ledgerTrustKeys')}[{index}]: accepted values: an object "
                "with keyId (ed25519:<16 hex>) and publicKey (PEM)."
            )
        keys.append(
            TrustKey(item["keyId"], _public_key("ledgerTrustKeys", index, item.get("publicKey")))
        )
    return tuple(keys)


def _witness_keys(reader: _Reader) -> tuple[str, ...]:
    from service.chain.errors import NoteError
    from service.chain.tlog import parse_witness_keys

    accepted = (
        "accepted values: a witness's cosignature/v1 vkey <name>+<8 hex>+<base64 key> "
        "(printed by `ztml ledger cosign`)"
    )
    keys: list[str] = []
    for index, item in enumerate(reader.json_list("ledgerWitnessKeys", required=False)):
        where = f"{_key('ledgerWitnessKeys')}[{index}]"
        if not isinstance(item, str):
            raise ConfigError(f"Invalid config {where}={item!r}: {accepted}.")
        try:
            parse_witness_keys([item])
        except NoteError as exc:
            raise ConfigError(f"Invalid config {where}: {exc}; {accepted}.") from exc
        keys.append(item.strip())
    if len(set(keys)) != len(keys):
        raise ConfigError(
            f"Invalid config {_key('ledgerWitnessKeys')}: a witness key is listed twice; "
            "accepted values: distinct vkeys."
        )
    return tuple(keys)


def _oms_signer_keys(reader: _Reader) -> tuple[str, ...]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    items = reader.json_list("omsSignerKeys", required=True)
    if not items:
        raise ConfigError(
            f"Invalid config {_key('omsSignerKeys')}: accepted values: at least one PEM public "
            "key of a trusted OMS model signer (e.g. ~/.ztml/keys/oms_signers/oms-signer.pub)."
        )
    keys: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not PEM_PUBLIC_RE.fullmatch(item.strip() + "\n"):
            raise ConfigError(
                f"Invalid config {_key('omsSignerKeys')}[{index}]: accepted values: a PEM "
                "public key (-----BEGIN PUBLIC KEY----- ...)."
            )
        try:
            public = load_pem_public_key(item.encode())
        except ValueError:
            public = None
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in (
            "secp256r1",
            "secp384r1",
            "secp521r1",
        ):
            raise ConfigError(
                f"Invalid config {_key('omsSignerKeys')}[{index}]: accepted values: an "
                "elliptic-curve public key on P-256, P-384 or P-521 (OMS signer keys)."
            )
        keys.append(item.strip() + "\n")
    return tuple(keys)


def _requirements(reader: _Reader) -> Requirements:
    """The gate's requirements: policies/data/provenance.json's, overridden by the stack's.

    The ``ztml:*`` keys set the default requirements; the per-modality overrides of
    provenance.json (tabular's epsilon) are kept, so they still apply to their modality.
    """
    defaults = load_requirements()
    return Requirements(
        min_robust_accuracy=reader.number(
            "minRobustAccuracy",
            default=defaults.min_robust_accuracy,
            check=lambda x: 0.0 <= x <= 1.0,
            accepted="a number from 0 to 1",
        ),
        epsilon=reader.number(
            "epsilon",
            default=defaults.epsilon,
            check=lambda x: 0.0 < x <= 1.0,
            accepted="a number in (0, 1]",
        ),
        attack=reader.matching(
            "attack", re.compile(r"^worst-case$"), "worst-case", default=defaults.attack
        ),
        min_steps=reader.integer("minSteps", default=defaults.min_steps, low=1, high=10_000),
        min_restarts=reader.integer(
            "minRestarts", default=defaults.min_restarts, low=1, high=1_000
        ),
        by_modality=defaults.by_modality,
    )


def _models(reader: _Reader) -> tuple[ExtraModel, ...]:
    """The extra models of ``ztml:models``: named, pinned, unique, none named like the stack's."""
    key = _key("models")
    accepted = (
        f"an object {{name, digest}}: name a DNS label of up to 53 characters (lowercase, "
        f"digits, '-') not starting with '{RESERVED_PREFIX}', digest {DIGEST_FORM}"
    )
    models: list[ExtraModel] = []
    for index, item in enumerate(reader.json_list("models", required=False)):
        where = f"{key}[{index}]"
        if not isinstance(item, dict) or set(item) != {"name", "digest"}:
            raise ConfigError(f"Invalid config {where}={item!r}: accepted values: {accepted}.")
        name, digest = item["name"], item["digest"]
        if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
            raise ConfigError(f"Invalid config {where}.name={name!r}: accepted values: {accepted}.")
        if name.startswith(RESERVED_PREFIX):
            raise ConfigError(
                f"Invalid config {where}.name={name!r}: names starting with '{RESERVED_PREFIX}' "
                f"belong to the stack (the primary model's service is {MODEL_SERVICE}); "
                f"accepted values: {accepted}."
            )
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
            raise ConfigError(
                f"Invalid config {where}.digest={digest!r}: accepted values: {DIGEST_FORM}."
            )
        if digest == PLACEHOLDER_DIGEST:
            raise ConfigError(
                f"Invalid config {where}.digest: the all-zero placeholder; accepted values: the "
                "digest of the approved model (`ztml model register` printed it)."
            )
        if any(m.name == name for m in models):
            raise ConfigError(
                f"Invalid config {where}.name={name!r}: another model has that name; accepted "
                "values: names unique within the stack."
            )
        models.append(ExtraModel(name, digest))
    return tuple(models)


def _client_namespaces(reader: _Reader) -> tuple[str, ...]:
    names = reader.json_list("clientNamespaces", required=False)
    if not all(isinstance(n, str) and DNS_LABEL_RE.fullmatch(n) for n in names):
        raise ConfigError(
            f"Invalid config {_key('clientNamespaces')}={names!r}: accepted values: a list of "
            "namespace names (DNS labels)."
        )
    return tuple(names)


def parse_config(raw: Mapping[str, str]) -> StackConfig:
    """Validate raw ``ztml:<key>`` strings (as Pulumi hands them over) into a StackConfig.

    Args:
        raw: Full config keys (``ztml:image``) to string values; objects and lists are
            JSON text, as Pulumi stores them.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: a value is missing or invalid; the message names the key and the
            accepted values.
    """
    reader = _Reader(raw)
    target = reader.matching(
        "target", CONTEXT_RE, "k3d, or the name of a kubeconfig context", default="k3d"
    )
    replicas = reader.integer("replicas", default=1, low=1, high=MAX_REPLICAS)
    max_replicas = reader.integer(
        "maxReplicas", default=replicas if replicas > 1 else 1, low=replicas, high=MAX_REPLICAS
    )
    if replicas == 1 and max_replicas != 1:
        raise ConfigError(
            f"Invalid config {_key('maxReplicas')}={max_replicas}: accepted values: 1 while "
            f"{_key('replicas')}=1 (one replica keeps the ledger on a ReadWriteOnce volume; "
            "set replicas > 1 to use PostgreSQL and scale out)."
        )
    for removed, why in REMOVED_KEYS.items():
        if reader.optional(removed) is not None:
            raise ConfigError(f"Config {_key(removed)} is no longer a setting: {why}.")
    postgres_password = reader.optional("postgresPassword")
    if replicas > 1 and (postgres_password is None or len(postgres_password) < 16):
        raise ConfigError(
            f"Missing or short config {_key('postgresPassword')}: with {_key('replicas')} > 1 "
            "the ledger lives in PostgreSQL; set a password of 16+ characters with "
            "`pulumi config set --secret postgresPassword ...`."
        )
    storage_class = reader.optional("storageClass")
    if storage_class is not None and not DNS_LABEL_RE.fullmatch(storage_class):
        raise ConfigError(
            f"Invalid config {_key('storageClass')}={storage_class!r}: accepted values: a "
            "StorageClass name (DNS label), or unset for the cluster default."
        )
    model_digest = reader.matching("modelDigest", DIGEST_RE, DIGEST_FORM)
    if model_digest == PLACEHOLDER_DIGEST:
        raise ConfigError(
            f"Invalid config {_key('modelDigest')}: the all-zero placeholder; set the digest of "
            "the approved model (`ztml ledger export` lists it)."
        )
    models = _models(reader)
    ledger_export = Path(reader.text("ledgerExport"))
    trainer_key_ids = _key_ids(reader, "trainerKeyIds")
    approver_key_ids = _key_ids(reader, "approverKeyIds")
    trust_keys = _trust_keys(reader)
    known = {k.key_id for k in trust_keys}
    for key, ids in (("trainerKeyIds", trainer_key_ids), ("approverKeyIds", approver_key_ids)):
        missing = [i for i in ids if i not in known]
        if missing:
            raise ConfigError(
                f"Invalid config {_key(key)}: {', '.join(missing)} has no public key in "
                f"{_key('ledgerTrustKeys')}; accepted values: key ids listed there."
            )
    return StackConfig(
        target=target,
        k3d_cluster=reader.matching("k3dCluster", DNS_LABEL_RE, "a DNS label", default="ztml"),
        namespace=reader.matching(
            "namespace", DNS_LABEL_RE, "a DNS label (lowercase, digits, '-')", default="ztml"
        ),
        image=str(_pinned_image(reader, "image")),
        opa_image=str(_pinned_image(reader, "opaImage")),
        postgres_image=_pinned_image(reader, "postgresImage", required=replicas > 1),
        model_digest=model_digest,
        models=models,
        replicas=replicas,
        max_replicas=max_replicas,
        requirements=_requirements(reader),
        trusted_issuers=_issuers(reader),
        jwt_audience=reader.matching(
            "jwtAudience",
            re.compile(r"^[\x21-\x7e]{1,200}$"),
            "a non-empty audience string",
            default="ztml-model-api",
        ),
        trainer_key_ids=trainer_key_ids,
        approver_key_ids=approver_key_ids,
        trust_keys=trust_keys,
        oms_signer_keys=_oms_signer_keys(reader),
        ledger_export=ledger_export
        if ledger_export.is_absolute()
        else PROJECT_ROOT / ledger_export,
        ledger_witness_keys=_witness_keys(reader),
        storage_class=storage_class,
        storage_size=reader.matching(
            "storageSize", QUANTITY_RE, "a size such as 1Gi or 512Mi", default="1Gi"
        ),
        client_namespaces=_client_namespaces(reader),
        postgres_password=postgres_password,
        admission=_admission(reader),
        service_tls=_service_tls(reader, models),
    )


def admission_namespace(namespace: str) -> str:
    """Return the admission webhook's namespace for the stack namespace ``namespace``."""
    return f"{namespace}{ADMISSION_NAMESPACE_SUFFIX}"


def admission_host(webhook_namespace: str) -> str:
    """Return the DNS name the API server dials for the webhook in ``webhook_namespace``."""
    return f"{ADMISSION_SERVICE}.{webhook_namespace}.svc"


def _switch(reader: _Reader, key: str, *, default: bool) -> bool:
    value = reader.text(key, "true" if default else "false").lower()
    if value not in ("true", "false"):
        raise ConfigError(f"Invalid config {_key(key)}={value!r}: accepted values: true, false.")
    return value == "true"


def _api_server_cidrs(reader: _Reader) -> tuple[str, ...]:
    import ipaddress

    items = reader.json_list("apiServerCidrs", required=False)
    if not items:
        raise ConfigError(
            f"Missing config {_key('apiServerCidrs')}: with {_key('admissionWebhook')} on, list "
            "the addresses the API server connects to the webhook from, as CIDRs (e.g. the "
            "control plane's or node's address /32); set it with "
            "`pulumi config set --path 'apiServerCidrs[0]' 10.0.0.1/32`, or turn the webhook "
            f"off with `pulumi config set {_key('admissionWebhook')} false`."
        )
    cidrs: list[str] = []
    for index, item in enumerate(items):
        try:
            network = (
                ipaddress.ip_network(item, strict=True)
                if isinstance(item, str) and "/" in item
                else None
            )
        except ValueError:
            network = None
        if network is None or network.prefixlen == 0:
            raise ConfigError(
                f"Invalid config {_key('apiServerCidrs')}[{index}]={item!r}: accepted values: "
                "a CIDR with its host bits clear and a prefix longer than /0 (e.g. 10.0.0.1/32)."
            )
        cidrs.append(str(network))
    return tuple(cidrs)


def _admission_parameters(reader: _Reader) -> dict[str, Any]:
    key = "admissionParameters"
    value = reader.optional(key)
    if value is None:
        return {}
    settings = json.loads((POLICIES_DIR / "data" / "admission.json").read_text(encoding="utf-8"))
    known = settings["admission"]
    accepted = (
        f"an object whose keys are settings of policies/data/admission.json "
        f"({', '.join(sorted(known))}), each of that setting's type"
    )
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ConfigError(f"Invalid config {_key(key)}: accepted values: {accepted}.")
    for name, setting in parsed.items():
        default = known.get(name)
        if isinstance(default, bool):
            fits = isinstance(setting, bool)
        else:
            fits = (
                isinstance(default, list)
                and isinstance(setting, list)
                and all(isinstance(s, str) and s for s in setting)
            )
        if name == "allowed_registries" and fits:
            fits = all(s.endswith("/") for s in setting)
        if not fits:
            raise ConfigError(
                f"Invalid config {_key(key)}.{name}={setting!r}: accepted values: {accepted}"
                + ("; registries end with '/'" if name == "allowed_registries" else "")
                + "."
            )
    return parsed


def service_hosts(namespace: str, *models: str) -> tuple[str, ...]:
    """The names clients dial the model services by, which their certificate must name.

    The primary model's Service first, then each extra model's (named like the model).
    """
    return tuple(
        host
        for service in (MODEL_SERVICE, *models)
        for host in (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")
    )


def _service_tls(reader: _Reader, models: tuple[ExtraModel, ...] = ()) -> TlsIdentity | None:
    """The model services' TLS identity; None only with ``insecurePlainHttp`` true.

    One certificate serves every model's Service, so it names all of them.
    """
    names = ("serviceTlsCert", "serviceTlsKey", "serviceCaBundle")
    given = {name: reader.optional(name) for name in names}
    if _switch(reader, "insecurePlainHttp", default=False):
        if any(value is not None for value in given.values()):
            set_ = ", ".join(_key(n) for n, v in given.items() if v is not None)
            raise ConfigError(
                f"Invalid config {_key('insecurePlainHttp')}=true: it turns TLS off, yet {set_} "
                "set; remove one or the other."
            )
        return None
    namespace = reader.matching("namespace", DNS_LABEL_RE, "a DNS label", default="ztml")
    hosts = service_hosts(namespace, *(m.name for m in models))
    for name, value in given.items():
        if value is None:
            how = "pulumi config set --secret" if name == "serviceTlsKey" else "pulumi config set"
            raise ConfigError(
                f"Missing config {_key(name)}: the model service serves TLS for {hosts[0]} "
                f'(on by default); set it with `{how} {name} -- "$(cat FILE)"` (`ztml cluster '
                "config` makes them for the local cluster; infra/README.md says how), or serve "
                "bearer tokens in the clear with `pulumi config set insecurePlainHttp true`."
            )
    return parse_tls_identity(
        keys=TlsKeys(
            cert=_key("serviceTlsCert"),
            key=_key("serviceTlsKey"),
            ca_bundle=_key("serviceCaBundle"),
        ),
        cert_pem=cast(str, given["serviceTlsCert"]),
        key_pem=cast(str, given["serviceTlsKey"]),
        ca_bundle_pem=cast(str, given["serviceCaBundle"]),
        hosts=hosts,
    )


def _admission(reader: _Reader) -> AdmissionConfig | None:
    if not _switch(reader, "admissionWebhook", default=True):
        return None
    namespace = reader.matching("namespace", DNS_LABEL_RE, "a DNS label", default="ztml")
    webhook_namespace = admission_namespace(namespace)
    if not DNS_LABEL_RE.fullmatch(webhook_namespace):
        raise ConfigError(
            f"Invalid config {_key('namespace')}={namespace!r}: with {_key('admissionWebhook')} "
            f"on, '{webhook_namespace}' (the webhook's namespace) must be a DNS label too; "
            f"accepted values: up to {63 - len(ADMISSION_NAMESPACE_SUFFIX)} characters."
        )
    cidrs = _api_server_cidrs(reader)
    keys = TlsKeys(
        cert=_key("admissionTlsCert"),
        key=_key("admissionTlsKey"),
        ca_bundle=_key("admissionCaBundle"),
    )
    host = admission_host(webhook_namespace)
    values: dict[str, str] = {}
    for name in ("admissionTlsCert", "admissionTlsKey", "admissionCaBundle"):
        value = reader.optional(name)
        if value is None:
            how = "pulumi config set --secret" if name == "admissionTlsKey" else "pulumi config set"
            raise ConfigError(
                f"Missing config {_key(name)}: with {_key('admissionWebhook')} on, the webhook "
                f'serves TLS for {host}; set it with `{how} {name} -- "$(cat FILE)"` '
                "(`ztml cluster config` makes them for the local cluster; infra/README.md says "
                f"how), or turn the webhook off with `pulumi config set admissionWebhook false`."
            )
        values[name] = value
    tls = parse_tls_identity(
        keys=keys,
        cert_pem=values["admissionTlsCert"],
        key_pem=values["admissionTlsKey"],
        ca_bundle_pem=values["admissionCaBundle"],
        hosts=(host,),
    )
    return AdmissionConfig(
        namespace=webhook_namespace,
        service=ADMISSION_SERVICE,
        api_server_cidrs=cidrs,
        tls=tls,
        parameters=_admission_parameters(reader),
    )


def read_stack_config() -> StackConfig:
    """Read and validate the current stack's ``ztml:*`` configuration (once per run).

    Raises:
        ConfigError: a value is missing or invalid.
    """
    import pulumi.runtime

    raw: dict[str, str] = {}
    for key in CONFIG_KEYS:
        value = pulumi.runtime.get_config(_key(key))
        if value is not None:
            raw[_key(key)] = value
    return parse_config(raw)
