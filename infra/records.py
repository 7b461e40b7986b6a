"""Storage for the provenance ledger and the audit log segments.

One replica (the k3d default): one ReadWriteOnce volume at ``ZTML_HOME`` holds the
SQLite ledger and the audit segments. Several replicas: the ledger moves to a hardened,
digest-pinned PostgreSQL StatefulSet; the service's ``ZTML_LEDGER_URL`` names a libpq
service (``postgresql://?service=ztml``) whose host, user and password live in a
Secret file (``PGSERVICEFILE``), so no credential is in the pod spec. Audit segments and
the rest of ``ZTML_HOME`` go to a ReadWriteMany volume, one sub-directory per pod. In
both cases audit events are also written to stdout for the cluster's log pipeline.

Scaled out, the state every replica must share (rate limits, flood counts, extraction
histories, the review queue) moves to the same PostgreSQL database: ``ZTML_MONITOR_URL``
names the same libpq service, so the replicas enforce one limit per caller, the
extraction detector sees all of a caller's queries and ``ztml review`` in any pod sees
one queue. With one replica the service keeps them in SQLite files in its home.

The verified ledger export the deploy gate approved is mounted read-only, and an init
container (``python -m service.ledger.seed``) copies its signed records into the pod's
ledger, so the service verifies its model against the same evidence at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from infra.hardening import (
    ClaimVolume,
    ConfigMapVolume,
    ContainerSpec,
    ExecProbe,
    Mount,
    PodParts,
    Resources,
    SecretVolume,
    hardened_pod_template,
    service_account,
)
from infra.network import POSTGRES_PORT

ZTML_HOME = "/var/lib/ztml"
# The init step sees the volume's root here and makes the service's home in it.
VOLUME_ROOT = "/var/lib/ztml-volume"
LEDGER_DB_DIR = "/etc/ztml/ledger-db"
LEDGER_EXPORT_DIR = "/etc/ztml/ledger-export"
LEDGER_EXPORT_FILE = f"{LEDGER_EXPORT_DIR}/ledger-export.json"
PG_SERVICE = "ztml"
POSTGRES_LABELS = {"app.kubernetes.io/name": "ztml-postgres", "app.kubernetes.io/part-of": "ztml"}
POSTGRES_UID = 10002
POSTGRES_USER = "ztml"
POSTGRES_DB = "ztml"
POSTGRES_DATA = "/var/lib/postgresql/data"
POSTGRES_PASSWORD_PATH = "/etc/postgres/password/password"  # noqa: S105 - a path
POSTGRES_START = (
    f"export POSTGRES_PASSWORD_FILE={POSTGRES_PASSWORD_PATH}; exec docker-entrypoint.sh postgres"
)


@dataclass(frozen=True)
class RecordsArgs:
    """Inputs of :class:`Records`.

    Attributes:
        namespace: Namespace of every resource.
        replicas: Model service replicas; more than one selects PostgreSQL.
        storage_class: StorageClass of the volumes, or None for the cluster default.
        storage_size: Size of each volume.
        ledger_export_json: The verified ledger export (public, signed records).
        postgres_image: PostgreSQL image pinned by digest (replicas > 1).
        postgres_password: PostgreSQL password, a secret (replicas > 1).
    """

    namespace: pulumi.Input[str]
    replicas: int
    storage_class: str | None
    storage_size: str
    ledger_export_json: str
    postgres_image: pulumi.Input[str] | None = None
    postgres_password: pulumi.Input[str] | None = None


class Records(pulumi.ComponentResource):
    """Volumes (and PostgreSQL when scaled out) for the ledger, the audit log and shared state.

    Attributes:
        backend: ``sqlite`` or ``postgres``.
        data_claim_name: The claim mounted at ZTML_HOME.
        postgres_service_name: The PostgreSQL Service, or None with SQLite.
        ledger_url: The non-secret ``ZTML_LEDGER_URL`` of the service.
        monitor_url: The ``ZTML_MONITOR_URL`` of the service (the shared store of the
            monitors and the review queue), or None with one replica (SQLite in its home).
        pod_parts: Volumes, mounts and env the model service needs.
    """

    backend: str
    data_claim_name: pulumi.Output[str]
    postgres_service_name: pulumi.Output[str] | None
    ledger_url: str
    monitor_url: str | None
    pod_parts: PodParts

    def __init__(
        self, name: str, args: RecordsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ztml:records:Records", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/part-of": "ztml", "app.kubernetes.io/component": "records"}
        export = k8s.core.v1.ConfigMap(
            f"{name}-ledger-export",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=args.namespace, labels=labels),
            data={"ledger-export.json": args.ledger_export_json},
            opts=child,
        )
        scaled = args.replicas > 1
        self.backend = "postgres" if scaled else "sqlite"
        self.data_claim_name = self._claim(
            "data", labels, access_mode="ReadWriteMany" if scaled else "ReadWriteOnce"
        )
        volumes: list[ClaimVolume | ConfigMapVolume | SecretVolume] = [
            ClaimVolume("records", self.data_claim_name),
            ConfigMapVolume("ledger-export", export.metadata.name),
        ]
        # The service's home is a sub-directory of the volume that the init step makes
        # (0700, the pod's user): a provisioner's volume root is often 0777 and owned by
        # root (local-path), which the service refuses as its home. Scaled out, each pod
        # gets its own sub-directory; with one replica, each model its own (home_dir).
        self._scaled = scaled
        mounts = [Mount("ledger-export", LEDGER_EXPORT_DIR)]
        env: dict[str, pulumi.Input[str]] = {"ZTML_HOME": ZTML_HOME, "ZTML_AUDIT_STDOUT": "1"}
        self.postgres_service_name = None
        self.monitor_url = None
        if scaled:
            service_file_secret, self.postgres_service_name = self._postgres(labels)
            volumes.append(SecretVolume("ledger-db", service_file_secret))
            mounts.append(Mount("ledger-db", LEDGER_DB_DIR))
            self.ledger_url = f"postgresql://?service={PG_SERVICE}"
            self.monitor_url = self.ledger_url
            env["PGSERVICEFILE"] = f"{LEDGER_DB_DIR}/pg_service.conf"
            env["ZTML_MONITOR_URL"] = self.monitor_url
        else:
            self.ledger_url = f"{ZTML_HOME}/ledger.db"
        env["ZTML_LEDGER_URL"] = self.ledger_url
        self._volumes = tuple(volumes)
        self._mounts = tuple(mounts)
        self._env = env
        self.pod_parts = self.model_parts()
        outputs: dict[str, object] = {
            "backend": self.backend,
            "data_claim_name": self.data_claim_name,
        }
        if self.postgres_service_name is not None:
            outputs["postgres_service_name"] = self.postgres_service_name
        self.register_outputs(outputs)

    def _home_dir(self, model: str | None) -> str:
        if self._scaled:
            return "$(POD_NAME)"
        return "home" if model is None else f"home-{model}"

    def model_parts(self, model: str | None = None) -> PodParts:
        """Volumes, mounts and env of one model's pods (the primary model's without a name).

        Every model's pods share the volume (and PostgreSQL when scaled out); with one
        replica each model keeps its own home (``home-<model>``) in it, so no two services
        share a ledger file, audit log or audit key.
        """
        home = (
            Mount("records", ZTML_HOME, read_only=False, sub_path_expr="$(POD_NAME)")
            if self._scaled
            else Mount("records", ZTML_HOME, read_only=False, sub_path=self._home_dir(model))
        )
        return PodParts(
            volumes=self._volumes,
            mounts=(home, *self._mounts),
            env=self._env,
            init_mounts=(Mount("records", VOLUME_ROOT, read_only=False),),
        )

    def seed_command(self, *, trust_dir: str, model: str | None = None) -> tuple[str, ...]:
        """The init container command: make the service's home, seed its ledger, audit key.

        The init container sees the volume's root at :data:`VOLUME_ROOT`; the service
        sees the home it makes there at ``ZTML_HOME``. ``model`` names an extra model
        (its own home with one replica), None the primary model.
        """
        home = f"{VOLUME_ROOT}/{self._home_dir(model)}"
        ledger = self.ledger_url if self.backend == "postgres" else f"{home}/ledger.db"
        return (
            "python",
            "-m",
            "service.ledger.seed",
            "--home",
            home,
            "--export",
            LEDGER_EXPORT_FILE,
            "--ledger",
            ledger,
            "--trust-dir",
            trust_dir,
            "--audit-keys",
            f"{home}/keys",
        )

    def _claim(
        self, role: str, labels: Mapping[str, str], *, access_mode: str
    ) -> pulumi.Output[str]:
        return k8s.core.v1.PersistentVolumeClaim(
            f"{self._name}-{role}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=self._args.namespace, labels=dict(labels)
            ),
            spec=self._claim_spec(access_mode),
            opts=pulumi.ResourceOptions(parent=self),
        ).metadata.name

    def _claim_spec(self, access_mode: str) -> k8s.core.v1.PersistentVolumeClaimSpecArgs:
        return k8s.core.v1.PersistentVolumeClaimSpecArgs(
            access_modes=[access_mode],
            storage_class_name=self._args.storage_class,
            resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                requests={"storage": self._args.storage_size}
            ),
        )

    def _postgres(self, labels: Mapping[str, str]) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        args = self._args
        name = self._name
        if args.postgres_image is None or args.postgres_password is None:
            raise ValueError("PostgreSQL needs an image and a password (checked by infra.config).")
        child = pulumi.ResourceOptions(parent=self)
        password: pulumi.Output[str] = pulumi.Output.secret(cast(Any, args.postgres_password))
        password_secret = k8s.core.v1.Secret(
            f"{name}-postgres-password",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=args.namespace, labels=dict(labels)),
            type="Opaque",
            string_data={"password": password},
            opts=child,
        )
        service = k8s.core.v1.Service(
            f"{name}-postgres",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=args.namespace, labels=POSTGRES_LABELS),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=POSTGRES_LABELS,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="postgres", port=POSTGRES_PORT, target_port=POSTGRES_PORT
                    )
                ],
            ),
            opts=child,
        )
        service_file: pulumi.Output[str] = pulumi.Output.secret(
            cast(
                Any,
                pulumi.Output.format(
                    "[{0}]\nhost={1}.{2}.svc\nport={3}\ndbname={4}\nuser={5}\npassword={6}\n",
                    PG_SERVICE,
                    service.metadata.name,
                    args.namespace,
                    POSTGRES_PORT,
                    POSTGRES_DB,
                    POSTGRES_USER,
                    password,
                ),
            )
        )
        service_file_secret = k8s.core.v1.Secret(
            f"{name}-ledger-db",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=args.namespace, labels=dict(labels)),
            type="Opaque",
            string_data={"pg_service.conf": service_file},
            opts=child,
        )
        account = service_account(f"{name}-postgres-sa", namespace=args.namespace, opts=child)
        ready = ExecProbe(
            command=("pg_isready", "-h", "127.0.0.1", "-U", POSTGRES_USER, "-d", POSTGRES_DB)
        )
        container = ContainerSpec(
            name="postgres",
            image=args.postgres_image,
            # The image's entrypoint reads the password from the file named by
            # POSTGRES_PASSWORD_FILE. That variable holds a path, not a secret, but its name
            # matches the admission policy's secret-name rule, so it is set here, in the
            # command, and the pod spec's env stays free of anything credential-shaped.
            command=("/bin/sh", "-c"),
            args=(POSTGRES_START,),
            ports=(("postgres", POSTGRES_PORT),),
            env={
                "POSTGRES_USER": POSTGRES_USER,
                "POSTGRES_DB": POSTGRES_DB,
                "PGDATA": f"{POSTGRES_DATA}/pgdata",
            },
            mounts=(
                Mount("postgres-data", POSTGRES_DATA, read_only=False),
                Mount("postgres-password", POSTGRES_PASSWORD_PATH.rsplit("/", 1)[0]),
            ),
            liveness=ready,
            readiness=ready,
            resources=Resources(
                cpu_request="100m", memory_request="256Mi", cpu_limit="1", memory_limit="1Gi"
            ),
            scratch_dirs=("/var/run/postgresql",),
        )
        k8s.apps.v1.StatefulSet(
            f"{name}-postgres",
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=args.namespace, labels=POSTGRES_LABELS),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                replicas=1,
                service_name=service.metadata.name,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=POSTGRES_LABELS),
                template=hardened_pod_template(
                    labels=POSTGRES_LABELS,
                    containers=[container],
                    service_account_name=account.metadata.name,
                    volumes=[SecretVolume("postgres-password", password_secret.metadata.name)],
                    uid=POSTGRES_UID,
                    claim_templates=("postgres-data",),
                ),
                volume_claim_templates=[
                    k8s.core.v1.PersistentVolumeClaimArgs(
                        metadata=k8s.meta.v1.ObjectMetaArgs(
                            name="postgres-data", labels=dict(labels)
                        ),
                        spec=self._claim_spec("ReadWriteOnce"),
                    )
                ],
            ),
            opts=child,
        )
        return service_file_secret.metadata.name, service.metadata.name
