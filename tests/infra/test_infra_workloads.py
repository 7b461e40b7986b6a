"""Every workload the program declares is hardened, and none escapes the shared builder.

The program runs under Pulumi's mocks (tests/infra/conftest.py) in both variants (one
replica with SQLite, three replicas with PostgreSQL); each assertion names the URN of
the resource it is about.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from infra_manifest_helpers import containers_of, pod_spec_of, pod_template_of

from infra.hardening import HARDENING_ANNOTATION, HARDENING_VERSION
from infra.model_service import SERVICE_PORT

INFRA = Path(__file__).resolve().parents[2] / "infra"
IMAGE_DIGEST = "@sha256:"


def test_every_variant_declares_workloads(any_run: Any) -> None:
    kinds = {m["kind"] for m in any_run.workloads().values()}
    expected = {"Deployment", "StatefulSet"} if any_run.config.uses_postgres else {"Deployment"}
    assert kinds == expected


def test_pods_run_as_numeric_non_root_user_with_fs_group(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        sc = pod_spec_of(manifest).get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, f"{urn}: pod runAsNonRoot must be true"
        for field in ("runAsUser", "runAsGroup", "fsGroup"):
            value = sc.get(field)
            assert isinstance(value, int) and value >= 10000, f"{urn}: pod {field}={value!r}"


def test_pods_use_runtime_default_seccomp(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        profile = pod_spec_of(manifest).get("securityContext", {}).get("seccompProfile", {})
        assert profile.get("type") == "RuntimeDefault", f"{urn}: pod seccomp {profile!r}"


def test_pods_never_mount_a_service_account_token(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        spec = pod_spec_of(manifest)
        assert spec.get("automountServiceAccountToken") is False, f"{urn}: token automount"
        account = spec.get("serviceAccountName")
        assert account and account != "default", f"{urn}: needs a dedicated ServiceAccount"
        accounts = {
            m["metadata"]["name"]: (u, m) for u, m in any_run.of_kind("ServiceAccount").items()
        }
        assert account in accounts, f"{urn}: ServiceAccount {account} is not declared"
        sa_urn, sa = accounts[account]
        assert sa.get("automountServiceAccountToken") is False, f"{sa_urn}: token automount"


def test_containers_are_locked_down(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        for container in containers_of(manifest):
            where = f"{urn} container {container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation"
            assert sc.get("privileged") is False, f"{where}: privileged"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: writable root fs"
            assert sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
            assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] >= 10000, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL"
            assert not sc.get("capabilities", {}).get("add"), f"{where}: added capabilities"
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where


def test_containers_have_requests_limits_and_probes(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        init = {c["name"] for c in pod_spec_of(manifest).get("initContainers", [])}
        for container in containers_of(manifest):
            where = f"{urn} container {container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    assert resources.get(kind, {}).get(res), f"{where}: {kind}.{res} missing"
            if container["name"] in init:
                continue  # Kubernetes refuses probes on init containers
            assert container.get("livenessProbe"), f"{where}: no liveness probe"
            assert container.get("readinessProbe"), f"{where}: no readiness probe"


def test_containers_pin_images_by_digest(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        for container in containers_of(manifest):
            image = container["image"]
            assert IMAGE_DIGEST in image, f"{urn} container {container['name']}: {image}"
            assert not image.split("@")[0].endswith(":latest"), f"{urn}: {image}"


def test_writable_paths_are_empty_dirs(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        volumes = {v["name"]: v for v in pod_spec_of(manifest).get("volumes", [])}
        for container in containers_of(manifest):
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            tmp = mounts.get("/tmp")
            assert tmp is not None, f"{urn} container {container['name']}: no /tmp mount"
            assert "emptyDir" in volumes[tmp["name"]], f"{urn}: /tmp is not an emptyDir"


def test_no_secret_reaches_an_environment_variable(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        for container in containers_of(manifest):
            where = f"{urn} container {container['name']}"
            assert not container.get("envFrom"), f"{where}: envFrom"
            for var in container.get("env", []):
                source = var.get("valueFrom", {})
                assert "secretKeyRef" not in source, f"{where}: {var['name']} from a Secret"
                value = str(var.get("value", ""))
                assert "PRIVATE KEY" not in value, f"{where}: {var['name']} holds a key"
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{where}: {var['name']}"
                password = any_run.config.postgres_password
                assert not password or password not in value, f"{where}: {var['name']}"


def test_secrets_are_mounted_as_files(any_run: Any) -> None:
    secrets = {m["metadata"]["name"] for m in any_run.of_kind("Secret").values()}
    mounted: set[str] = set()
    for manifest in any_run.workloads().values():
        for volume in pod_spec_of(manifest).get("volumes", []):
            if "secret" in volume:
                mounted.add(volume["secret"]["secretName"])
    assert secrets == mounted, f"Secrets not mounted as files: {sorted(secrets - mounted)}"


def _model(run: Any) -> tuple[str, dict[str, Any]]:
    urn: str
    manifest: dict[str, Any]
    urn, manifest = run.model_deployment()
    return urn, manifest


def test_model_service_runs_bentoml_on_port_3000_with_health_probes(any_run: Any) -> None:
    urn, manifest = _model(any_run)
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    assert model["command"][:4] == [
        "python",
        "-m",
        "service.app.serve",
        "service.app.service:ZtmlModelService",
    ], urn
    assert model["command"][-2:] == ["--port", str(SERVICE_PORT)], urn
    https = {"port": SERVICE_PORT, "scheme": "HTTPS"}
    assert model["livenessProbe"]["httpGet"] == {"path": "/livez", **https}, urn
    assert model["readinessProbe"]["httpGet"] == {"path": "/readyz", **https}, urn


def test_the_service_port_serves_tls_from_a_tls_secret_by_default(any_run: Any) -> None:
    urn, manifest = _model(any_run)
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    env = {v["name"]: v.get("value") for v in model["env"]}
    assert "ZTML_INSECURE_PLAIN_HTTP" not in env, urn
    tls_dir = env["ZTML_TLS_DIR"]
    (mount,) = [m for m in model["volumeMounts"] if m["mountPath"] == tls_dir]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in manifest["spec"]["template"]["spec"]["volumes"]}
    secret_name = volumes[mount["name"]]["secret"]["secretName"]
    secrets = {m["metadata"]["name"]: m for m in any_run.of_kind("Secret").values()}
    assert secrets[secret_name]["type"] == "kubernetes.io/tls"


def test_plain_http_needs_the_loudly_named_opt_out(make_config: Any, plain_http_run: Any) -> None:
    from infra.config import ConfigError

    with pytest.raises(ConfigError, match=r"ztml:serviceTlsCert.*insecurePlainHttp true"):
        make_config(serviceTlsCert=None)
    with pytest.raises(ConfigError, match=r"insecurePlainHttp.*serviceTlsCert"):
        make_config(insecurePlainHttp="true")
    _, manifest = _model(plain_http_run)
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    env = {v["name"]: v.get("value") for v in model["env"]}
    assert env["ZTML_INSECURE_PLAIN_HTTP"] == "true" and "ZTML_TLS_DIR" not in env
    assert "scheme" not in model["readinessProbe"]["httpGet"]


def test_model_digest_is_pinned_in_env_and_annotation(any_run: Any) -> None:
    urn, manifest = _model(any_run)
    digest = any_run.config.model_digest
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    env = {v["name"]: v.get("value") for v in model["env"]}
    assert env["ZTML_MODEL_DIGEST"] == digest, urn
    assert pod_template_of(manifest)["metadata"]["annotations"]["ztml.dev/model-digest"] == digest
    assert env["ZTML_AUDIT_STDOUT"] == "1", urn
    assert env["ZTML_HOME"] == "/var/lib/ztml", urn


def test_opa_sidecar_serves_its_api_only_on_a_unix_socket(any_run: Any) -> None:
    urn, manifest = _model(any_run)
    opa = next(c for c in containers_of(manifest) if c["name"] == "opa")
    addrs = [a for a in opa["args"] if a.startswith("--addr=")]
    assert addrs == ["--addr=unix:///run/ztml-opa/opa.sock"], urn
    assert "--unix-socket-perm=600" in opa["args"], urn
    assert [p["containerPort"] for p in opa["ports"]] == [8282], f"{urn}: only diagnostics"
    assert opa["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8282}, urn


def test_opa_sidecar_has_the_local_stacks_go_runtime_settings(any_run: Any) -> None:
    from service.stack.runner import opa_env

    urn, manifest = _model(any_run)
    opa = next(c for c in containers_of(manifest) if c["name"] == "opa")
    env = {v["name"]: v.get("value") for v in opa["env"]}
    assert env == opa_env({}) == {"GOMAXPROCS": "1", "GOGC": "400", "GOMEMLIMIT": "192MiB"}, urn
    # One thread fits the sidecar's CPU limit (Go would derive two from it).
    assert opa["resources"]["limits"]["cpu"] == "500m", urn
    # Go's soft memory limit stays below the container's.
    assert env["GOMEMLIMIT"] == "192MiB" and opa["resources"]["limits"]["memory"] == "256Mi", urn


def test_opa_sidecar_keeps_its_store_optimized_for_reads_like_the_local_stack(any_run: Any) -> None:
    from service.stack.runner import opa_command

    urn, manifest = _model(any_run)
    opa = next(c for c in containers_of(manifest) if c["name"] == "opa")
    assert "--optimize-store-for-read-speed" in opa["args"], urn
    assert "--optimize-store-for-read-speed" in opa_command(Path("opa"), 8181)


def test_opa_socket_volume_is_in_memory_and_shared_only_by_opa_and_the_service(
    any_run: Any,
) -> None:
    urn, manifest = _model(any_run)
    spec = pod_template_of(manifest)["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "opa-socket"]
    assert volume["emptyDir"]["medium"] == "Memory", urn
    mounted = {
        c["name"]: m
        for c in spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == "opa-socket"
    }
    assert set(mounted) == {"opa", "model"}, urn
    assert mounted["model"]["readOnly"] is True, f"{urn}: the service cannot replace the socket"
    assert not mounted["opa"].get("readOnly"), urn
    model = next(c for c in spec["containers"] if c["name"] == "model")
    env = {v["name"]: v.get("value") for v in model["env"]}
    assert env["ZTML_OPA_URL"] == "unix:///run/ztml-opa/opa.sock", urn
    assert not any(name.startswith("ZTML_OPA_") and "FILE" in name for name in env), urn


def test_ledger_is_seeded_by_an_init_container_from_the_gate_export(any_run: Any) -> None:
    urn, manifest = _model(any_run)
    (seed,) = pod_spec_of(manifest)["initContainers"]
    assert seed["command"][:3] == ["python", "-m", "service.ledger.seed"], urn
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    assert seed["image"] == model["image"], urn
    ledger_url = {v["name"]: v.get("value") for v in model["env"]}["ZTML_LEDGER_URL"]
    seeded = seed["command"][seed["command"].index("--ledger") + 1]
    home = seed["command"][seed["command"].index("--home") + 1]
    if any_run.config.uses_postgres:
        assert seeded == ledger_url, urn
    else:
        # The same file: the init step sees the volume's root, the service its home.
        assert seeded == f"{home}/ledger.db" and ledger_url == "/var/lib/ztml/ledger.db", urn
    (export,) = (m for u, m in any_run.of_kind("ConfigMap").items() if "ledger-export" in u)
    assert json.loads(export["data"]["ledger-export.json"]) == json.loads(
        any_run.config.ledger_export.read_text()
    )


def test_the_service_home_is_a_sub_directory_the_init_step_makes(any_run: Any) -> None:
    urn, manifest = _model(any_run)
    (seed,) = pod_spec_of(manifest)["initContainers"]
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    (root,) = (m for m in seed["volumeMounts"] if m["name"] == "records")
    (home,) = (m for m in model["volumeMounts"] if m["name"] == "records")
    assert root["mountPath"] == "/var/lib/ztml-volume" and "subPath" not in root, urn
    assert home["mountPath"] == "/var/lib/ztml", urn
    sub = home.get("subPath") or home.get("subPathExpr")
    made = seed["command"][seed["command"].index("--home") + 1]
    assert made == f"/var/lib/ztml-volume/{sub}", urn
    assert seed["command"][seed["command"].index("--audit-keys") + 1] == f"{made}/keys", urn


def test_opa_loads_every_policy_but_the_tests(any_run: Any) -> None:
    ((urn, policies),) = (
        (u, m) for u, m in any_run.of_kind("ConfigMap").items() if "ztml-opa-policies" in u
    )
    keys = set(policies["data"])
    assert "authz__authz.rego" in keys, urn
    assert "data__roles.json" in keys, urn
    assert not any(k.endswith("_test.rego") for k in keys), f"{urn}: test files shipped"


def test_single_replica_keeps_sqlite_on_one_volume(single_run: Any) -> None:
    urn, manifest = _model(single_run)
    assert manifest["spec"]["replicas"] == 1, urn
    assert manifest["spec"]["strategy"]["type"] == "Recreate", urn
    (claim,) = single_run.of_kind("PersistentVolumeClaim").values()
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not single_run.of_kind("StatefulSet")


def test_scaled_service_reads_the_postgres_url_from_a_file(scaled_run: Any) -> None:
    urn, manifest = _model(scaled_run)
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    env = {v["name"]: v.get("value") for v in model["env"]}
    assert env["ZTML_LEDGER_URL"] == "postgresql://?service=ztml", urn
    assert env["PGSERVICEFILE"] == "/etc/ztml/ledger-db/pg_service.conf", urn
    secrets = {u.rsplit("::", 1)[1]: m for u, m in scaled_run.of_kind("Secret").items()}
    service_file = secrets["ztml-records-ledger-db"]["stringData"]["pg_service.conf"]
    assert "password=correct-horse-battery-staple" in service_file
    assert "[ztml]" in service_file
    ((pg_urn, statefulset),) = scaled_run.of_kind("StatefulSet").items()
    template = statefulset["spec"]["volumeClaimTemplates"][0]
    assert template["spec"]["storageClassName"] == "fast-ssd", pg_urn


def test_scaled_replicas_share_monitor_state_and_reviews_in_the_ledger_database(
    scaled_run: Any,
) -> None:
    urn, manifest = _model(scaled_run)
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    env = {v["name"]: v.get("value") for v in model["env"]}
    # The same libpq service as the ledger: host, user and password stay in the file.
    assert env["ZTML_MONITOR_URL"] == env["ZTML_LEDGER_URL"] == "postgresql://?service=ztml", urn
    mounts = {m["name"]: m for m in model["volumeMounts"]}
    assert env["PGSERVICEFILE"].startswith(mounts["ledger-db"]["mountPath"] + "/"), urn
    assert mounts["ledger-db"]["readOnly"] is True, urn
    secrets = {u.rsplit("::", 1)[1]: m for u, m in scaled_run.of_kind("Secret").items()}
    service_file = secrets["ztml-records-ledger-db"]["stringData"]["pg_service.conf"]
    (pg_service,) = (m for u, m in scaled_run.of_kind("Service").items() if "postgres" in u)
    assert f"host={pg_service['metadata']['name']}." in service_file, urn


def test_single_replica_keeps_monitor_state_in_its_home(single_run: Any) -> None:
    urn, manifest = _model(single_run)
    model = next(c for c in containers_of(manifest) if c["name"] == "model")
    env = {v["name"]: v.get("value") for v in model["env"]}
    assert "ZTML_MONITOR_URL" not in env, f"{urn}: one replica keeps its SQLite files"


def test_service_is_cluster_ip_with_pdb_and_hpa(any_run: Any) -> None:
    models = 1 + len(any_run.config.models)
    services = {u: m for u, m in any_run.of_kind("Service").items() if "ztml-model" in u}
    assert len(services) == models, sorted(services)
    for urn, service in services.items():
        assert service["spec"]["type"] == "ClusterIP", urn
        assert service["spec"]["ports"][0]["port"] == SERVICE_PORT, urn
    pdbs = any_run.stack().of_kind("PodDisruptionBudget")
    assert len(pdbs) == models, sorted(pdbs)
    for pdb_urn, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 1, pdb_urn
    hpas = any_run.of_kind("HorizontalPodAutoscaler")
    assert len(hpas) == models, sorted(hpas)
    for hpa_urn, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2", hpa_urn
        assert hpa["spec"]["minReplicas"] == any_run.config.replicas, hpa_urn
        assert hpa["spec"]["maxReplicas"] == any_run.config.max_replicas, hpa_urn


def test_every_workload_carries_the_hardening_builder_mark(any_run: Any) -> None:
    for urn, manifest in any_run.workloads().items():
        annotations = pod_template_of(manifest).get("metadata", {}).get("annotations", {})
        assert annotations.get(HARDENING_ANNOTATION) == HARDENING_VERSION, (
            f"{urn}: pod template not built by infra.hardening"
        )


POD_BUILDING_CLASSES = {
    "PodSpecArgs",
    "PodTemplateSpecArgs",
    "ContainerArgs",
    "SecurityContextArgs",
    "PodSecurityContextArgs",
    "Pod",
    "PodSpecArgsDict",
}


def test_no_module_but_the_builder_constructs_pod_parts() -> None:
    offenders = []
    for path in sorted(INFRA.rglob("*.py")):
        if path.name == "hardening.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in POD_BUILDING_CLASSES:
                    offenders.append(f"{path.relative_to(INFRA)}:{node.lineno} {name}")
    assert not offenders, f"pod specs built outside infra/hardening.py: {offenders}"


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_workload_pod_templates_come_from_the_builder_only(scaled_run: Any, kind: str) -> None:
    for urn, manifest in scaled_run.of_kind(kind).items():
        spec = pod_spec_of(manifest)
        assert spec.get("enableServiceLinks") is False, f"{urn}: service links"
        assert spec.get("hostNetwork") is False, f"{urn}: host network"


def test_witness_keys_reach_the_init_step_and_the_service(
    make_config: Any, program_runner: Any, ledger: Any
) -> None:
    run = program_runner(
        make_config(
            ledgerWitnessKeys=[ledger.witness_vkey], ledgerExport=str(ledger.cosigned_export_path)
        )
    )
    urn, manifest = _model(run)
    envs = {
        c["name"]: {v["name"]: v.get("value") for v in c.get("env", [])}
        for c in containers_of(manifest)
    }
    assert envs["model"]["ZTML_LEDGER_WITNESS_KEYS"] == ledger.witness_vkey, urn
    assert envs["ledger-seed"]["ZTML_LEDGER_WITNESS_KEYS"] == ledger.witness_vkey, urn


def test_no_witness_key_sets_no_witness_variable(single_run: Any) -> None:
    urn, manifest = _model(single_run)
    for container in containers_of(manifest):
        names = {v["name"] for v in container.get("env", [])}
        assert "ZTML_LEDGER_WITNESS_KEYS" not in names, urn
