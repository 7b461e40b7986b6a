"""Pulumi mocks for the ztml program, a real signed ledger export, and program runs.

The mocks are installed at import time, before the program is imported. A run of the
program records every registered resource in the mock monitor; for pulumi-kubernetes
resources the mock state is the Kubernetes manifest (the inputs already hold
``apiVersion``, ``kind`` and camelCase fields; ``metadata.name`` is filled as Pulumi's
auto-naming would), so tests see ``URN -> manifest``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pulumi.runtime.mocks import MockMonitor

from infra.policypack.opa_eval import manifest_from_props


class ZtmlMocks(pulumi.runtime.Mocks):
    """Return manifests for Kubernetes resources (the program declares nothing else)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.typ.startswith("kubernetes:"):
            return f"{args.name}-id", manifest_from_props(args.name, args.inputs)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


class RecordingMonitor(MockMonitor):
    """The mock monitor, also recording each resource's dependencies (URNs)."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.dependencies: dict[str, set[str]] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.dependencies[response.urn] = set(request.dependencies)
        return response


MOCKS = ZtmlMocks()
MONITOR = RecordingMonitor(MOCKS)
pulumi.runtime.set_mocks(MOCKS, project="ztml", stack="test", preview=False, monitor=MONITOR)

import infra.__main__ as program  # noqa: E402 - the mocks must be set before the program loads
from infra.config import StackConfig, parse_config, service_hosts  # noqa: E402
from service.model.metrics import evaluation_document, robust_entry  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAKE_IMAGE = "ghcr.io/ztml/model@sha256:" + "a1" * 32
FAKE_OPA_IMAGE = "docker.io/openpolicyagent/opa@sha256:" + "b2" * 32
FAKE_POSTGRES_IMAGE = "registry.local/library/postgres@sha256:" + "c3" * 32
APPROVED = "sha256:" + "1" * 64
UNAPPROVED = "sha256:" + "2" * 64
REVOKED = "sha256:" + "3" * 64
WEAK = "sha256:" + "4" * 64
UNREGISTERED = "sha256:" + "5" * 64
# Two further approved models, served by ``ztml:models`` in the several-models run.
APPROVED_CNN = "sha256:" + "6" * 64
APPROVED_TABULAR = "sha256:" + "7" * 64
EXTRA_MODELS = {"digits-cnn": APPROVED_CNN, "breast-cancer": APPROVED_TABULAR}
WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
)
ADMISSION_COMPONENT = "ztml:admission:AdmissionWebhook"
API_SERVER_CIDRS = ["10.0.0.1/32", "192.168.49.0/24"]


@dataclass(frozen=True)
class WebhookTls:
    """The admission webhook's serving certificate, key and CA, issued for the test stack."""

    cert_pem: str
    key_pem: str
    ca_pem: str


def issue_webhook_tls(directory: Path, host: str, *aliases: str) -> WebhookTls:
    """Issue a serving certificate for ``host`` (and aliases) from a CA made in ``directory``."""
    from service.cluster.pki import Authority, Identity

    authority = Authority(directory, "ca")
    authority.ensure()
    name = host.split(".")[0]
    cert, key = authority.issue(Identity(name, host, server=True, hosts=(host, *aliases)))
    return WebhookTls(cert.read_text(), key.read_text(), authority.cert_path.read_text())


@dataclass(frozen=True)
class Ledger:
    """A signed ledger export on disk and the keys that signed it."""

    export_path: Path
    cosigned_export_path: Path
    witness_vkey: str
    trainer_key_id: str
    approver_key_id: str
    trust_keys: list[dict[str, str]]
    issuer_pem: str
    oms_signer_pem: str
    webhook_tls: WebhookTls
    service_tls: WebhookTls


@dataclass(frozen=True)
class Run:
    """One program run: URN -> manifest for every Kubernetes resource, plus all states."""

    config: StackConfig
    manifests: dict[str, dict[str, Any]]
    states: dict[str, dict[str, Any]]
    dependencies: dict[str, set[str]] = field(default_factory=dict)

    def depends_on(self, urn: str, other: str) -> bool:
        """Whether ``urn`` waits for ``other``, directly or through its dependencies."""
        seen: set[str] = set()
        pending = [urn]
        while pending:
            current = pending.pop()
            for dependency in self.dependencies.get(current, set()):
                if dependency == other:
                    return True
                if dependency not in seen:
                    seen.add(dependency)
                    pending.append(dependency)
        return False

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        """Manifests of one kind, by URN."""
        return {u: m for u, m in self.manifests.items() if m.get("kind") == kind}

    def workloads(self) -> dict[str, dict[str, Any]]:
        """Manifests that run pods, by URN."""
        return {u: m for u, m in self.manifests.items() if m.get("kind") in WORKLOAD_KINDS}

    def stack(self) -> Run:
        """The run without the admission webhook's resources: the stack's namespace only."""
        return Run(
            config=self.config,
            manifests={u: m for u, m in self.manifests.items() if ADMISSION_COMPONENT not in u},
            states={u: s for u, s in self.states.items() if ADMISSION_COMPONENT not in u},
            dependencies=self.dependencies,
        )

    def admission(self) -> dict[str, dict[str, Any]]:
        """The admission webhook's manifests, by URN."""
        return {u: m for u, m in self.manifests.items() if ADMISSION_COMPONENT in u}

    def model_deployment(self) -> tuple[str, dict[str, Any]]:
        """The model service's Deployment and its URN."""
        ((urn, manifest),) = (
            (u, m)
            for u, m in self.of_kind("Deployment").items()
            if m["metadata"]["name"] == "ztml-model"
        )
        return urn, manifest


def _evaluation(accuracy: float) -> dict[str, Any]:
    return evaluation_document(
        dataset="sklearn-digits/test",
        clean_accuracy=0.97,
        robust=[
            robust_entry(
                attack="worst-case", epsilon=0.1, steps=100, restarts=10, accuracy=accuracy
            )
        ],
    )


def _register(
    ledger: Any, signer: Any, digest: str, accuracy: float, name: str = "digits-mlp"
) -> None:
    ledger.register(
        signer=signer,
        name=name,
        version=digest[7:12],
        artifact={"digest": digest, "format": "safetensors", "size": 1234},
        training_data_digest="sha256:" + "9" * 64,
        code_revision="test",
        hyperparameters={"epochs": 1},
        evaluation=_evaluation(accuracy),
    )


def _public_pem(key: Ed25519PrivateKey) -> str:
    from service.keys.store import public_pem

    return public_pem(key.public_key())


@pytest.fixture(scope="session")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """A real ledger (service.ledger) with approved, unapproved, revoked, weak models."""
    from service.chain.seen import SeenCheckpoints
    from service.chain.tlog import witness_verifier
    from service.keys.store import Signer, TrustStore
    from service.ledger import open_ledger

    home = tmp_path_factory.mktemp("ledger")
    trainer = Signer("trainer@example", Ed25519PrivateKey.generate())
    approver = Signer("approver@example", Ed25519PrivateKey.generate())
    issuer = Ed25519PrivateKey.generate()
    with open_ledger(home / "ledger.db") as book:
        _register(book, trainer, APPROVED, 0.9)
        book.approve(APPROVED, signer=approver, comment="meets the bar")
        _register(book, trainer, UNAPPROVED, 0.9)
        _register(book, trainer, REVOKED, 0.9)
        book.approve(REVOKED, signer=approver)
        book.revoke(REVOKED, signer=approver, reason="training data leak")
        _register(book, trainer, WEAK, 0.2)
        book.approve(WEAK, signer=approver)
        for name, extra in EXTRA_MODELS.items():
            _register(book, trainer, extra, 0.9, name=name)
            book.approve(extra, signer=approver)
        trust = TrustStore.from_public_keys([trainer.public_key, approver.public_key])
        export = book.export(trust)
        witness = Signer("w.example/1", Ed25519PrivateKey.generate())
        book.cosign(
            name=witness.identity,
            signer=witness,
            trust=trust,
            seen=SeenCheckpoints(home / "witness.json"),
            timestamp=1_800_000_000,
        )
        cosigned = book.export(trust)
    path = home / "ledger-export.json"
    path.write_text(json.dumps(export, indent=1), encoding="utf-8")
    cosigned_path = home / "ledger-export-cosigned.json"
    cosigned_path.write_text(json.dumps(cosigned, indent=1), encoding="utf-8")
    return Ledger(
        export_path=path,
        cosigned_export_path=cosigned_path,
        witness_vkey=witness_verifier(witness.identity, witness.public_key).vkey(),
        trainer_key_id=trainer.key_id,
        approver_key_id=approver.key_id,
        trust_keys=[
            {"keyId": s.key_id, "publicKey": _public_pem(s.private_key)}
            for s in (trainer, approver)
        ],
        issuer_pem=_public_pem(issuer),
        oms_signer_pem=_oms_signer_pem(),
        webhook_tls=issue_webhook_tls(home / "webhook-tls", "ztml-admission.ztml-admission.svc"),
        service_tls=issue_webhook_tls(home / "webhook-tls", *service_hosts("ztml", *EXTRA_MODELS)),
    )


def _oms_signer_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def raw_config(ledger: Ledger, **overrides: Any) -> dict[str, str]:
    """Raw ``ztml:*`` strings as Pulumi would pass them, with overrides (None deletes)."""
    values: dict[str, Any] = {
        "target": "k3d",
        "namespace": "ztml",
        "image": FAKE_IMAGE,
        "opaImage": FAKE_OPA_IMAGE,
        "modelDigest": APPROVED,
        "replicas": "1",
        "ledgerExport": str(ledger.export_path),
        "trustedIssuers": [
            {"iss": "https://issuer.ztml.test", "kid": "issuer-1", "publicKey": ledger.issuer_pem}
        ],
        "trainerKeyIds": [ledger.trainer_key_id],
        "approverKeyIds": [ledger.approver_key_id],
        "ledgerTrustKeys": ledger.trust_keys,
        "omsSignerKeys": [ledger.oms_signer_pem],
        "apiServerCidrs": API_SERVER_CIDRS,
        "admissionTlsCert": ledger.webhook_tls.cert_pem,
        "admissionTlsKey": ledger.webhook_tls.key_pem,
        "admissionCaBundle": ledger.webhook_tls.ca_pem,
        "serviceTlsCert": ledger.service_tls.cert_pem,
        "serviceTlsKey": ledger.service_tls.key_pem,
        "serviceCaBundle": ledger.service_tls.ca_pem,
    }
    values.update(overrides)
    return {
        f"ztml:{k}": v if isinstance(v, str) else json.dumps(v)
        for k, v in values.items()
        if v is not None
    }


@pytest.fixture(scope="session")
def make_config(ledger: Ledger) -> Callable[..., StackConfig]:
    """Build a validated StackConfig from the test defaults plus overrides."""

    def make(**overrides: Any) -> StackConfig:
        return parse_config(raw_config(ledger, **overrides))

    return make


def run_program(config: StackConfig) -> Run:
    """Run the Pulumi program under the mocks and collect what it registered."""
    MONITOR.resources.clear()
    MONITOR.dependencies.clear()

    @pulumi.runtime.test
    def _run() -> None:
        program.main(config)

    _run()
    states = {urn: dict(reg.state) for urn, reg in MONITOR.resources.items()}
    manifests = {
        urn: state
        for urn, state in states.items()
        if urn.split("::")[2].split("$")[-1].startswith("kubernetes:") and "apiVersion" in state
    }
    dependencies = {urn: set(deps) for urn, deps in MONITOR.dependencies.items()}
    return Run(config=config, manifests=manifests, states=states, dependencies=dependencies)


@pytest.fixture(scope="session")
def single_run(make_config: Callable[..., StackConfig]) -> Run:
    """The k3d-like stack: one replica, SQLite ledger on a ReadWriteOnce volume."""
    return run_program(make_config())


@pytest.fixture(scope="session")
def scaled_run(make_config: Callable[..., StackConfig]) -> Run:
    """The scaled stack: three replicas, PostgreSQL ledger, RWX audit volume."""
    return run_program(
        make_config(
            replicas="3",
            maxReplicas="6",
            postgresImage=FAKE_POSTGRES_IMAGE,
            postgresPassword="correct-horse-battery-staple",
            storageClass="fast-ssd",
            clientNamespaces=["ingress-nginx"],
        )
    )


@pytest.fixture(scope="session")
def no_webhook_run(make_config: Callable[..., StackConfig]) -> Run:
    """The one-replica stack with ``ztml:admissionWebhook`` false."""
    return run_program(
        make_config(
            admissionWebhook="false",
            apiServerCidrs=None,
            admissionTlsCert=None,
            admissionTlsKey=None,
            admissionCaBundle=None,
        )
    )


@pytest.fixture(scope="session")
def plain_http_run(make_config: Callable[..., StackConfig]) -> Run:
    """The one-replica stack with ``ztml:insecurePlainHttp`` true (no service TLS)."""
    return run_program(
        make_config(
            insecurePlainHttp="true",
            serviceTlsCert=None,
            serviceTlsKey=None,
            serviceCaBundle=None,
        )
    )


@pytest.fixture(scope="session")
def models_run(make_config: Callable[..., StackConfig]) -> Run:
    """The one-replica stack serving two extra models (``ztml:models``) beside the primary."""
    return run_program(
        make_config(models=[{"name": n, "digest": d} for n, d in EXTRA_MODELS.items()])
    )


@pytest.fixture(scope="session")
def scaled_models_run(make_config: Callable[..., StackConfig]) -> Run:
    """The scaled-out stack (PostgreSQL) serving the same two extra models."""
    return run_program(
        make_config(
            replicas="2",
            maxReplicas="3",
            postgresImage=FAKE_POSTGRES_IMAGE,
            postgresPassword="correct-horse-battery-staple",
            models=[{"name": n, "digest": d} for n, d in EXTRA_MODELS.items()],
        )
    )


@pytest.fixture(scope="session", params=["single", "scaled", "models"])
def any_run(request: pytest.FixtureRequest) -> Run:
    """Each stack variant in turn (one replica, scaled out, several models)."""
    return request.getfixturevalue(f"{request.param}_run")


@dataclass(frozen=True)
class Digests:
    """Model digests with known ledger states."""

    approved: str = APPROVED
    unapproved: str = UNAPPROVED
    revoked: str = REVOKED
    weak: str = WEAK
    unregistered: str = UNREGISTERED


@pytest.fixture(scope="session")
def digests() -> Digests:
    """Digests registered, approved, revoked... in the test ledger."""
    return Digests()


@pytest.fixture(scope="session")
def extra_models() -> dict[str, str]:
    """The extra models of the several-models runs: name -> approved digest."""
    return dict(EXTRA_MODELS)


@pytest.fixture(scope="session")
def program_runner() -> Callable[[StackConfig], Run]:
    """Run the program under the mocks (raises what the program raises)."""
    return run_program


@pytest.fixture
def registered_urns() -> Callable[[], list[str]]:
    """URNs the mock monitor holds (after a run, even a failed one)."""
    return lambda: list(MONITOR.resources)


@pytest.fixture
def raw_values(ledger: Ledger) -> dict[str, str]:
    """The test stack's raw ``ztml:*`` strings (a fresh copy per test)."""
    return raw_config(ledger)


@pytest.fixture
def preview_mode() -> Iterator[None]:
    """Switch the mocks to a dry run (``pulumi preview``) for one test."""
    pulumi.runtime.set_mocks(MOCKS, project="ztml", stack="test", preview=True, monitor=MONITOR)
    try:
        yield
    finally:
        pulumi.runtime.set_mocks(
            MOCKS, project="ztml", stack="test", preview=False, monitor=MONITOR
        )
