package ztml.admission_test

test_deny_writable_root_filesystem if {
	has_finding(findings(deployment(with_container({"securityContext": {"readOnlyRootFilesystem": false}}))), "readOnlyRootFilesystem: true")
}

test_deny_missing_resources if {
	container := json.remove(hardened_container("app"), ["resources/limits/memory", "resources/requests/cpu"])
	result := findings(deployment(pod_spec({"containers": [container]})))
	has_finding(result, "must set resources.limits.memory")
	has_finding(result, "must set resources.requests.cpu")
	count(result) == 2
}

test_deny_image_by_tag if {
	details := details_of(findings(deployment(with_container({"image": "ghcr.io/ztml/digits-service:latest"}))), "must pin its image by digest")
	details.value == "ghcr.io/ztml/digits-service:latest"
}

test_deny_image_with_short_digest if {
	has_finding(findings(deployment(with_container({"image": "ghcr.io/ztml/app@sha256:abc"}))), "must pin its image by digest")
}

test_deny_image_from_other_registry if {
	other := concat("@", ["docker.io/library/nginx", digest])
	has_finding(findings(deployment(with_container({"image": other}))), "from a registry that is not allowed")
}

test_deny_registry_prefix_lookalike if {
	lookalike := concat("@", ["ghcr.io/ztml-evil/app", digest])
	has_finding(findings(deployment(with_container({"image": lookalike}))), "from a registry that is not allowed")
}

test_allow_each_configured_registry if {
	every prefix in data.data.admission.allowed_registries {
		count(findings(deployment(with_container({"image": concat("", [prefix, "app@", digest])})))) == 0
	}
}

test_deny_automount_unset if {
	has_finding(findings(deployment(object.remove(good_pod_spec, ["automountServiceAccountToken"]))), "automountServiceAccountToken: false")
}

test_deny_secret_key_ref_env if {
	env := [{"name": "DB_DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}}]
	details := details_of(findings(deployment(with_container({"env": env}))), "must not read secret db")
	details.field == "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef"
}

test_deny_env_from_secret if {
	has_finding(findings(deployment(with_container({"envFrom": [{"secretRef": {"name": "all"}}]}))), "must not import secret all")
}

test_allow_env_from_config_map if {
	count(findings(deployment(with_container({"envFrom": [{"configMapRef": {"name": "cfg"}}]})))) == 0
}

test_deny_secret_named_env_with_literal if {
	every var_name in ["DB_PASSWORD", "API_TOKEN", "client_secret", "SIGNING_KEY", "GCP_CREDENTIALS", "PRIVATE_PEM", "StripeApiKey", "ZTML_TOKEN_FILE"] {
		has_finding(findings(deployment(with_container({"env": [{"name": var_name, "value": "hunter2"}]}))), "looks like a secret, to a literal value")
	}
}

test_allow_plain_env if {
	env := [{"name": "LOG_LEVEL", "value": "info"}, {"name": "KEY_ID_PATH", "value": "/keys"}, {"name": "API_TOKEN", "value": ""}]
	count(findings(deployment(with_container({"env": env})))) == 0
}

test_deny_secret_looking_value if {
	every value in ["AKIAABCDEFGHIJKLMNOP", "ghp_abcdefghijklmnopqrstuvwxyz0123", "-----BEGIN PRIVATE KEY-----\nMII", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.sig"] {
		details := details_of(findings(deployment(with_container({"env": [{"name": "CONFIG", "value": value}]}))), "to a value that looks like a secret")
		details.value == "<redacted>"
	}
}
