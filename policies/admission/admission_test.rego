package ztml.admission_test

import data.ztml.admission as adm

digest := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

image := concat("@", ["ghcr.io/ztml/digits-service", digest])

hardened_container(container_name) := {
	"name": container_name,
	"image": image,
	"securityContext": {
		"runAsNonRoot": true,
		"runAsUser": 10001,
		"allowPrivilegeEscalation": false,
		"readOnlyRootFilesystem": true,
		"capabilities": {"drop": ["ALL"]},
		"seccompProfile": {"type": "RuntimeDefault"},
	},
	"resources": {
		"requests": {"cpu": "100m", "memory": "128Mi"},
		"limits": {"cpu": "500m", "memory": "256Mi"},
	},
}

good_pod_spec := {
	"automountServiceAccountToken": false,
	"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
	"containers": [hardened_container("app")],
	"volumes": [{"name": "tmp", "emptyDir": {}}],
}

# A pod spec with overrides merged into the hardened one.
pod_spec(overrides) := object.union(good_pod_spec, overrides)

# A pod spec whose only container has overrides merged into the hardened one.
with_container(overrides) := pod_spec({"containers": [object.union(hardened_container("app"), overrides)]})

deployment(spec) := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {"name": "digits", "namespace": "ztml"},
	"spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "digits"}}, "spec": spec}},
}

review(obj) := {"review": {"object": obj, "operation": "CREATE"}}

default_deny_policy := {
	"apiVersion": "networking.k8s.io/v1",
	"kind": "NetworkPolicy",
	"metadata": {"name": "default-deny", "namespace": "ztml"},
	"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}

inventory := {"namespace": {"ztml": {"networking.k8s.io/v1": {"NetworkPolicy": {"default-deny": default_deny_policy}}}}}

# The findings for obj reviewed with the default-deny inventory.
findings(obj) := result if {
	result := adm.deny with input as review(obj) with data.inventory as inventory
}

# True when some finding's message contains fragment.
has_finding(result, fragment) if {
	some finding in result
	contains(finding.msg, fragment)
}

# The details of the finding whose message contains fragment.
details_of(result, fragment) := finding.details if {
	some finding in result
	contains(finding.msg, fragment)
}

test_allow_hardened_deployment if {
	count(findings(deployment(good_pod_spec))) == 0
}

test_allow_decision_for_hardened_deployment if {
	d := adm.decision with input as review(deployment(good_pod_spec)) with data.inventory as inventory
	d == {"allow": true, "violations": []}
}

test_allow_every_workload_kind if {
	every kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"] {
		count(findings(object.union(deployment(good_pod_spec), {"kind": kind}))) == 0
	}
}

test_allow_pod if {
	pod := {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ztml"}, "spec": good_pod_spec}
	count(findings(pod)) == 0
}

test_allow_cronjob if {
	cron := {
		"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "ztml"},
		"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": good_pod_spec}}}},
	}
	count(findings(cron)) == 0
}

test_deny_cronjob_with_root_container if {
	cron := {
		"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "ztml"},
		"spec": {"jobTemplate": {"spec": {"template": {"spec": with_container({"securityContext": {"runAsUser": 0}})}}}},
	}
	details := details_of(findings(cron), "must not run as user 0")
	details.field == "spec.jobTemplate.spec.template.spec.containers[0].securityContext.runAsUser"
}

test_allow_bare_manifest_input if {
	result := adm.deny with input as deployment(good_pod_spec) with data.inventory as inventory
	count(result) == 0
}

test_allow_delete_operation if {
	bad := deployment(pod_spec({"hostNetwork": true}))
	result := adm.deny with input as {"review": {"object": bad, "operation": "DELETE"}} with data.inventory as inventory
	count(result) == 0
}

test_allow_review_namespace_preferred if {
	adm.namespace == "other" with input as {"review": {"namespace": "other", "object": deployment(good_pod_spec)}}
}

test_deny_input_without_object if {
	result := adm.deny with input as {"review": {}}
	has_finding(result, "input has no Kubernetes object")
}

test_deny_violation_alias_matches_deny if {
	bad := review(deployment(pod_spec({"hostPID": true})))
	v := adm.violation with input as bad with data.inventory as inventory
	d := adm.deny with input as bad with data.inventory as inventory
	v == d
	count(v) == 1
}

test_deny_details_name_object_container_field_and_value if {
	details := details_of(findings(deployment(with_container({"securityContext": {"privileged": true}}))), "must not be privileged")
	details == {
		"kind": "Deployment", "name": "digits", "namespace": "ztml", "container": "app",
		"field": "spec.template.spec.containers[0].securityContext.privileged", "value": true,
	}
}

test_allow_gatekeeper_parameters_override_settings if {
	obj := deployment(with_container({"image": "quay.io/acme/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}))
	result := adm.deny with input as {"review": {"object": obj}, "parameters": {"allowed_registries": ["quay.io/acme/"]}} with data.inventory as inventory
	count(result) == 0
}

test_deny_builtin_defaults_trust_no_registry if {
	result := adm.deny with input as review(deployment(good_pod_spec)) with data.inventory as inventory with data.data as {}
	has_finding(result, "from a registry that is not allowed")
}
