"""The admission webhook: OPA enforcing policies/admission in the API server.

The program runs under the mocks (tests/infra/conftest.py) with the webhook on (the
default) and off. Each assertion names the URN it is about. Whether the webhook's own
resources pass the admission policy, the Kubernetes schemas and Checkov, and whether its
pod is hardened, is checked with every other resource in test_infra_manifests.py and
test_infra_workloads.py, which see them in ``any_run``.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from infra_manifest_helpers import containers_of, pod_spec_of

from infra.admission import RULES, SERVICE_PORT, WEBHOOK_PATH, WEBHOOK_PORT
from infra.config import ConfigError, StackConfig, parse_config
from infra.namespace import ADMISSION_LABEL
from infra.policy_engine import POLICY_MOUNT
from service.toolchain.opa import find_opa
from service.toolchain.paths import POLICIES_DIR

Run = Any  # tests/infra/conftest.py's Run
KIND_OF_RESOURCE = {
    "pods": "Pod",
    "services": "Service",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "replicasets": "ReplicaSet",
    "jobs": "Job",
    "cronjobs": "CronJob",
}


def _one(run: Run, kind: str) -> tuple[str, dict[str, Any]]:
    ((urn, manifest),) = ((u, m) for u, m in run.admission().items() if m["kind"] == kind)
    return urn, manifest


def _webhook(run: Run) -> tuple[str, dict[str, Any]]:
    urn, configuration = _one(run, "ValidatingWebhookConfiguration")
    (webhook,) = configuration["webhooks"]
    return urn, webhook


def _selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Evaluate a label selector as the API server does (In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def _namespace_labels(name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, **(extra or {})}


def test_the_webhook_is_on_by_default(single_run: Run) -> None:
    assert single_run.config.admission is not None
    kinds = sorted(m["kind"] for m in single_run.admission().values())
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Namespace",
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "ResourceQuota",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration",
        ]
    )


def test_switched_off_the_program_declares_no_webhook_and_labels_nothing(
    no_webhook_run: Run,
) -> None:
    assert no_webhook_run.config.admission is None
    assert no_webhook_run.admission() == {}
    assert not no_webhook_run.of_kind("ValidatingWebhookConfiguration")
    ((urn, namespace),) = no_webhook_run.of_kind("Namespace").items()
    assert ADMISSION_LABEL not in namespace["metadata"]["labels"], urn


def test_the_webhook_fails_closed_and_has_no_side_effects(any_run: Run) -> None:
    urn, webhook = _webhook(any_run)
    assert webhook["failurePolicy"] == "Fail", urn
    assert webhook["sideEffects"] == "None", urn
    assert webhook["admissionReviewVersions"] == ["v1"], urn
    assert webhook["matchPolicy"] == "Equivalent", urn
    assert 1 <= webhook["timeoutSeconds"] <= 10, urn


def test_the_api_server_calls_the_policy_through_the_service_and_trusts_only_the_ca(
    any_run: Run,
) -> None:
    urn, webhook = _webhook(any_run)
    settings = any_run.config.admission
    assert settings is not None
    client = webhook["clientConfig"]
    assert "url" not in client, urn
    assert client["service"] == {
        "namespace": settings.namespace,
        "name": settings.service,
        "port": SERVICE_PORT,
        "path": WEBHOOK_PATH,
    }, urn
    assert base64.b64decode(client["caBundle"]).decode() == settings.tls.ca_bundle_pem, urn
    svc_urn, service = _one(any_run, "Service")
    assert service["metadata"]["name"] == settings.service, svc_urn
    assert service["spec"]["type"] == "ClusterIP", svc_urn
    assert service["spec"]["ports"] == [
        {"name": "https", "port": SERVICE_PORT, "targetPort": "https", "protocol": "TCP"}
    ], svc_urn


def test_the_webhook_matches_the_stack_namespace_only(any_run: Run) -> None:
    urn, webhook = _webhook(any_run)
    settings = any_run.config.admission
    assert settings is not None
    selector = webhook["namespaceSelector"]
    ((ns_urn, stack_ns),) = any_run.stack().of_kind("Namespace").items()
    stack_labels = _namespace_labels(any_run.config.namespace, stack_ns["metadata"]["labels"])
    assert stack_labels[ADMISSION_LABEL] == settings.namespace, ns_urn
    assert _selected(selector, stack_labels), f"{urn}: the stack namespace is not matched"
    _, own = _one(any_run, "Namespace")
    assert ADMISSION_LABEL not in own["metadata"]["labels"], urn
    assert not _selected(selector, _namespace_labels("default")), urn


@pytest.mark.parametrize(
    "namespace", ["kube-system", "kube-public", "kube-node-lease", "ztml-admission"]
)
def test_system_namespaces_and_its_own_are_never_matched_even_when_labelled(
    single_run: Run, namespace: str
) -> None:
    urn, webhook = _webhook(single_run)
    labels = _namespace_labels(namespace, {ADMISSION_LABEL: "ztml-admission"})
    assert not _selected(webhook["namespaceSelector"], labels), f"{urn} matches {namespace}"


def _judged_kinds() -> set[str]:
    result = subprocess.run(
        [
            str(find_opa()),
            "eval",
            "-f",
            "json",
            "-d",
            str(POLICIES_DIR / "lib"),
            "data.ztml.lib.k8s.pod_spec_paths",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    paths = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
    return {*paths, "Service"}


def test_the_rules_cover_every_kind_the_policy_judges(single_run: Run) -> None:
    urn, webhook = _webhook(single_run)
    covered = set()
    for rule in webhook["rules"]:
        assert rule["operations"] == ["CREATE", "UPDATE"], urn
        assert rule["apiVersions"] == ["v1"] and rule["scope"] == "Namespaced", urn
        covered |= {KIND_OF_RESOURCE[r] for r in rule["resources"] if "/" not in r}
    assert covered == _judged_kinds(), urn
    core = next(r for r in webhook["rules"] if r["apiGroups"] == [""])
    assert "pods/ephemeralcontainers" in core["resources"], f"{urn}: `kubectl debug` unchecked"
    assert [(g, tuple(r)) for g, r in RULES] == [
        (rule["apiGroups"][0], tuple(rule["resources"])) for rule in webhook["rules"]
    ]


def test_only_the_api_server_reaches_the_webhook_port(any_run: Run) -> None:
    settings = any_run.config.admission
    assert settings is not None
    policies = {u: m for u, m in any_run.admission().items() if m["kind"] == "NetworkPolicy"}
    assert {m["metadata"]["namespace"] for m in policies.values()} == {settings.namespace}
    deny = next(m for u, m in policies.items() if u.endswith("-default-deny"))
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ((urn, allow),) = ((u, m) for u, m in policies.items() if u.endswith("-allow-api-server"))
    assert allow["spec"]["policyTypes"] == ["Ingress"], f"{urn}: no egress may be allowed"
    (rule,) = allow["spec"]["ingress"]
    cidrs = settings.api_server_cidrs
    assert cidrs and rule["from"] == [{"ipBlock": {"cidr": cidr}} for cidr in cidrs], urn
    assert rule["ports"] == [{"protocol": "TCP", "port": WEBHOOK_PORT}], urn
    _, deployment = _one(any_run, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in allow["spec"]["podSelector"]["matchLabels"].items())


def test_opa_serves_https_with_the_configured_certificate(any_run: Run) -> None:
    settings = any_run.config.admission
    assert settings is not None
    urn, deployment = _one(any_run, "Deployment")
    (opa,) = containers_of(deployment)
    args = opa["args"]
    assert args[:2] == ["run", "--server"], urn
    assert f"--addr=0.0.0.0:{WEBHOOK_PORT}" in args, urn
    assert "--tls-cert-file=/etc/ztml-admission/tls/tls.crt" in args, urn
    assert "--tls-private-key-file=/etc/ztml-admission/tls/tls.key" in args, urn
    assert "--authorization=basic" in args, f"{urn}: OPA's API must refuse policy changes"
    assert {p["name"]: p["containerPort"] for p in opa["ports"]} == {
        "https": WEBHOOK_PORT,
        "opa-diag": 8282,
    }, urn
    # OPA serves its diagnostic listener over TLS too once it has a certificate.
    for probe in ("readinessProbe", "livenessProbe"):
        assert opa[probe]["httpGet"] == {"path": "/health", "port": 8282, "scheme": "HTTPS"}, urn
    mount = next(m for m in opa["volumeMounts"] if m["mountPath"] == "/etc/ztml-admission/tls")
    assert mount["readOnly"] is True, urn
    volume = next(v for v in pod_spec_of(deployment)["volumes"] if v["name"] == mount["name"])
    secret_urn, secret = _one(any_run, "Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"], urn
    assert secret["type"] == "kubernetes.io/tls", secret_urn
    assert secret["stringData"]["tls.crt"] == settings.tls.cert_pem, secret_urn
    assert image_of(opa) == any_run.config.opa_image, urn


def image_of(container: dict[str, Any]) -> str:
    image: str = container["image"]
    return image


def test_every_opa_flag_the_webhook_uses_exists(single_run: Run) -> None:
    _, deployment = _one(single_run, "Deployment")
    (opa,) = containers_of(deployment)
    help_text = subprocess.run(
        [str(find_opa()), "run", "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for arg in opa["args"][1:]:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert f"{flag} " in help_text or f"{flag}=" in help_text, f"opa run has no {flag}"


def _policy_config_maps(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    maps = {u.rsplit("::", 1)[1]: m for u, m in run.of_kind("ConfigMap").items()}
    return maps["ztml-admission-policies"], maps["ztml-opa-policies"]


def test_opa_loads_the_sidecars_policies_and_the_stack_parameters(single_run: Run) -> None:
    webhook, sidecar = _policy_config_maps(single_run)
    extra = {k: v for k, v in webhook["data"].items() if k not in sidecar["data"]}
    assert {k: v for k, v in webhook["data"].items() if k in sidecar["data"]} == sidecar["data"]
    assert list(extra) == ["data__admission_webhook.json"]
    assert json.loads(extra["data__admission_webhook.json"]) == {
        "admission_webhook": {"parameters": {}}
    }
    assert "admission__webhook.rego" in webhook["data"]
    assert "system__authz__authz.rego" in webhook["data"]
    _, deployment = _one(single_run, "Deployment")
    annotation = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotation["ztml.dev/policy-digest"]
        == webhook["metadata"]["annotations"]["ztml.dev/policy-digest"]
    )
    settings = single_run.config.admission
    assert annotation["ztml.dev/tls-cert-digest"] == settings.tls.cert_digest, "no roll on renewal"


def test_decision_logs_go_to_the_console_through_the_mask(single_run: Run) -> None:
    maps = {u.rsplit("::", 1)[1]: m for u, m in single_run.of_kind("ConfigMap").items()}
    config = maps["ztml-admission-config"]["data"]["opa-config.yaml"]
    assert config == (POLICIES_DIR / "config" / "opa-config.yaml").read_text()
    assert "console: true" in config and "mask_decision: /system/log/mask" in config


def _mounted(tmp_path: Path, config_map: dict[str, Any]) -> Path:
    root = tmp_path / POLICY_MOUNT.strip("/")
    for key, text in config_map["data"].items():
        target = root / key.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def _answer(root: Path, review: dict[str, Any]) -> dict[str, Any]:
    path = root.parent / "review.json"
    path.write_text(json.dumps(review))
    result = subprocess.run(
        [
            str(find_opa()),
            "eval",
            "-f",
            "json",
            "-d",
            str(root),
            "-i",
            str(path),
            "data.ztml.admission.webhook.response",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, Any] = json.loads(result.stdout)["result"][0]["expressions"][0]["value"]
    return answer


def _review(case: str) -> dict[str, Any]:
    example = json.loads(
        (POLICIES_DIR / "examples" / "admission" / case / "input.json").read_text()
    )
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {**example["review"], "uid": f"uid-{case}"},
    }


def test_the_mounted_policies_answer_an_admission_review(single_run: Run, tmp_path: Path) -> None:
    webhook, _ = _policy_config_maps(single_run)
    root = _mounted(tmp_path, webhook)
    refused = _answer(root, _review("bad-root-pod"))["response"]
    assert refused["uid"] == "uid-bad-root-pod" and refused["allowed"] is False
    assert "must not run as user 0" in refused["status"]["message"]
    admitted = _answer(root, _review("good-deployment"))["response"]
    assert admitted == {"uid": "uid-good-deployment", "allowed": True}


def test_stack_parameters_reach_the_webhooks_policies(
    make_config: Callable[..., StackConfig], program_runner: Callable[[StackConfig], Run]
) -> None:
    run = program_runner(make_config(admissionParameters={"external_services": ["ztml/public"]}))
    webhook, _ = _policy_config_maps(run)
    settings = json.loads(webhook["data"]["data__admission_webhook.json"])
    assert settings == {"admission_webhook": {"parameters": {"external_services": ["ztml/public"]}}}


def test_two_replicas_with_a_disruption_budget_fit_the_quota(any_run: Run) -> None:
    urn, deployment = _one(any_run, "Deployment")
    replicas = deployment["spec"]["replicas"]
    assert replicas == 2, urn
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pdb_urn, pdb = _one(any_run, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1, pdb_urn
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"], pdb_urn
    quota_urn, quota = _one(any_run, "ResourceQuota")
    hard = quota["spec"]["hard"]
    pods = replicas + 1  # a rolling update's surge pod
    assert int(hard["pods"]) >= pods, quota_urn
    (opa,) = containers_of(deployment)
    for key in ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory"):
        bound, resource = key.split(".")
        need = pods * _quantity(opa["resources"][bound][resource])
        assert round(_quantity(hard[key]), 6) >= round(need, 6), f"{quota_urn}: {key} < {need}"
    assert hard["services.nodeports"] == "0" and hard["services.loadbalancers"] == "0"


def _quantity(value: str) -> float:
    for suffix, factor in (("m", 1e-3), ("Mi", 2**20), ("Gi", 2**30)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_the_webhooks_namespace_enforces_restricted_pod_security(any_run: Run) -> None:
    urn, namespace = _one(any_run, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert namespace["metadata"]["name"] == "ztml-admission", urn
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", urn
    for u, manifest in any_run.admission().items():
        if manifest["kind"] not in ("Namespace", "ValidatingWebhookConfiguration"):
            assert manifest["metadata"]["namespace"] == "ztml-admission", u


def test_the_stack_is_declared_after_the_webhook_is_ready(any_run: Run) -> None:
    configuration, _ = _one(any_run, "ValidatingWebhookConfiguration")
    deployment, _ = _one(any_run, "Deployment")
    service, _ = _one(any_run, "Service")
    assert any_run.depends_on(configuration, deployment), "configuration before OPA is ready"
    assert any_run.depends_on(configuration, service), configuration
    stack = any_run.stack()
    for urn in stack.manifests:
        assert any_run.depends_on(urn, configuration), f"{urn} may be created before the webhook"


# The switch and its keys.


def _with(raw: dict[str, str], **values: Any) -> dict[str, str]:
    out = dict(raw)
    for key, value in values.items():
        if value is None:
            out.pop(f"ztml:{key}", None)
        else:
            out[f"ztml:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


@pytest.mark.parametrize(
    ("overrides", "key", "accepted"),
    [
        ({"admissionWebhook": "yes"}, "ztml:admissionWebhook", "true, false"),
        ({"apiServerCidrs": None}, "ztml:apiServerCidrs", "API server"),
        ({"apiServerCidrs": []}, "ztml:apiServerCidrs", "API server"),
        ({"apiServerCidrs": ["10.0.0.1"]}, "ztml:apiServerCidrs[0]", "CIDR"),
        ({"apiServerCidrs": ["10.0.0.1/24"]}, "ztml:apiServerCidrs[0]", "host bits clear"),
        ({"apiServerCidrs": ["0.0.0.0/0"]}, "ztml:apiServerCidrs[0]", "longer than /0"),
        ({"apiServerCidrs": "10.0.0.1/32"}, "ztml:apiServerCidrs", "not a list"),
        ({"admissionTlsCert": None}, "ztml:admissionTlsCert", "pulumi config set"),
        ({"admissionTlsKey": None}, "ztml:admissionTlsKey", "--secret"),
        ({"admissionCaBundle": None}, "ztml:admissionCaBundle", "pulumi config set"),
        ({"admissionTlsCert": "not a cert"}, "ztml:admissionTlsCert", "PEM certificates"),
        ({"admissionTlsKey": "not a key"}, "ztml:admissionTlsKey", "PEM private key"),
        ({"admissionParameters": ["x"]}, "ztml:admissionParameters", "an object"),
        (
            {"admissionParameters": {"allowed_images": ["x"]}},
            "ztml:admissionParameters.allowed_images",
            "allowed_registries",
        ),
        (
            {"admissionParameters": {"allowed_registries": ["ghcr.io/x"]}},
            "ztml:admissionParameters.allowed_registries",
            "end with '/'",
        ),
        (
            {"admissionParameters": {"require_default_deny_network_policy": "no"}},
            "ztml:admissionParameters.require_default_deny_network_policy",
            "type",
        ),
        ({"namespace": "n" * 60}, "ztml:namespace", "up to 53 characters"),
    ],
)
def test_a_bad_webhook_value_names_its_key(
    raw_values: dict[str, str], overrides: dict[str, Any], key: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(raw_values, **overrides))
    assert key in str(info.value), str(info.value)
    assert accepted in str(info.value), str(info.value)


def test_the_certificate_must_name_the_webhooks_service(raw_values: dict[str, str]) -> None:
    # The stack namespace decides the webhook's namespace, hence the name the API server dials.
    with pytest.raises(
        ConfigError, match=r"ztml:admissionTlsCert: .*ztml-admission\.prod-admission"
    ):
        parse_config(_with(raw_values, namespace="prod"))


def test_switched_off_the_webhook_needs_none_of_its_keys(raw_values: dict[str, str]) -> None:
    raw = _with(
        raw_values,
        admissionWebhook="false",
        apiServerCidrs=None,
        admissionTlsCert=None,
        admissionTlsKey=None,
        admissionCaBundle=None,
    )
    assert parse_config(raw).admission is None


def test_the_switch_accepts_pulumis_boolean_text(raw_values: dict[str, str]) -> None:
    assert parse_config(_with(raw_values, admissionWebhook="True")).admission is not None
    assert parse_config(_with(raw_values, admissionWebhook="true")).admission is not None


def test_the_webhook_settings_are_typed(raw_values: dict[str, str]) -> None:
    config = parse_config(
        _with(raw_values, admissionParameters={"allowed_registries": ["ztml.local/"]})
    )
    settings = config.admission
    assert settings is not None
    assert settings.namespace == "ztml-admission"
    assert settings.host == "ztml-admission.ztml-admission.svc"
    assert settings.api_server_cidrs == tuple(json.loads(raw_values["ztml:apiServerCidrs"]))
    assert settings.parameters == {"allowed_registries": ["ztml.local/"]}
    assert "PRIVATE KEY" not in repr(config), "the key must stay out of repr"


def test_the_tls_key_is_stored_as_a_secret_by_the_automation_api() -> None:
    from infra.automation import SECRET_KEYS

    assert "ztml:admissionTlsKey" in SECRET_KEYS
    assert "ztml:admissionTlsCert" not in SECRET_KEYS
