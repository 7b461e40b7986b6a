package system.log_test

import data.system.log as decision_log

event(inp) := {"decision_id": "1", "path": "ztml/authz/decision", "input": inp, "result": {"allow": true}}

test_deny_raw_features_in_log if {
	masked := decision_log.mask with input as event({"request": {"features": [[0.1]]}})
	"/input/request/features" in masked
}

test_deny_request_body_in_log if {
	"/input/request/body" in decision_log.mask with input as event({"request": {"body": "{}"}})
}

test_deny_instances_in_log if {
	"/input/instances" in decision_log.mask with input as event({"instances": [[0.0]]})
}

test_deny_tokens_in_log if {
	masked := decision_log.mask with input as event({"token": "t"})
	"/input/token" in masked
	"/input/subject/token" in masked
	"/input/headers/authorization" in masked
}

test_allow_decision_fields_stay_in_log if {
	masked := decision_log.mask with input as event({"subject": {"sub": "alice"}})
	not "/input/subject" in masked
	not "/input/subject/sub" in masked
	not "/input/action" in masked
	not "/result" in masked
}

review_event(request) := event({"request": request})

deployment := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {
		"name": "d",
		"annotations": {
			"kubectl.kubernetes.io/last-applied-configuration": `{"env": "hunter2"}`,
			"team": "ml",
		},
	},
	"spec": {"template": {"spec": {
		"initContainers": [{"name": "seed", "env": [{"name": "MODE", "value": "seed"}]}],
		"containers": [
			{"name": "app", "env": [
				{"name": "DB_PASSWORD", "value": "hunter2"},
				{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
			]},
			{"name": "sidecar"},
		],
	}}},
}

test_deny_env_values_under_review_in_log if {
	masked := decision_log.mask with input as review_event({"operation": "CREATE", "object": deployment})
	"/input/request/object/spec/template/spec/containers/0/env/0/value" in masked
	"/input/request/object/spec/template/spec/initContainers/0/env/0/value" in masked
	not "/input/request/object/spec/template/spec/containers/0/env/1/value" in masked
}

test_deny_old_object_in_log if {
	masked := decision_log.mask with input as review_event({"operation": "UPDATE", "object": deployment, "oldObject": deployment})
	"/input/request/oldObject" in masked
}

test_deny_last_applied_configuration_in_log if {
	masked := decision_log.mask with input as review_event({"operation": "CREATE", "object": deployment})
	{"op": "upsert", "path": "/input/request/object/metadata/annotations", "value": {"team": "ml"}} in masked
}

test_allow_review_without_annotations_or_env_keeps_the_object if {
	service := {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}
	masked := decision_log.mask with input as review_event({"operation": "CREATE", "object": service})
	not "/input/request/oldObject" in masked
	every path in masked {
		not startswith(sprintf("%v", [path]), "/input/request/object")
	}
}
