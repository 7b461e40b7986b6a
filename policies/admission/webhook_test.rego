package ztml.admission.webhook_test

import data.ztml.admission
import data.ztml.admission.webhook

# The examples under policies/examples/admission, loaded with the whole tree as
# data.examples.admission.<case> = {"review": ..., "inventory": ...}.
examples := data.examples.admission

before_deploy_only_examples := {"bad-no-network-policy"}

admission_review(request) := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"request": request,
}

# An example's review as the API server sends it: an AdmissionRequest with a uid.
example_request(case) := object.union(examples[case].review, {"uid": sprintf("uid-%s", [case])})

answer_for(request) := answer if {
	answer := webhook.response.response with input as admission_review(request)
}

direct_messages(case) := {finding.msg | some finding in direct_findings(examples[case])}

direct_findings(example) := found if {
	found := admission.deny with input as {"review": example.review}
		with data.inventory as object.get(example, "inventory", {})
}

cause_messages(answer) := {cause.message | some cause in answer.status.details.causes}

pod(spec) := {
	"uid": "pod-uid",
	"kind": {"group": "", "version": "v1", "kind": "Pod"},
	"operation": "CREATE",
	"namespace": "ztml",
	"name": "p",
	"object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ztml"}, "spec": spec},
}

hardened_pod := pod(examples["good-deployment"].review.object.spec.template.spec)

test_deny_every_bad_example_with_the_messages_of_the_direct_query if {
	bad := {case | some case, _ in examples; startswith(case, "bad-")} - before_deploy_only_examples
	count(bad) >= 5
	every case in bad {
		answer := answer_for(example_request(case))
		answer.allowed == false
		answer.status.code == 403
		direct := direct_messages(case)
		count(direct) > 0
		cause_messages(answer) == direct
		every msg in direct {
			contains(answer.status.message, msg)
		}
	}
}

test_allow_every_good_example if {
	good := {case | some case, _ in examples; startswith(case, "good-")}
	count(good) >= 3
	every case in good {
		answer_for(example_request(case)) == {"uid": sprintf("uid-%s", [case]), "allowed": true}
	}
}

test_allow_cross_object_rule_runs_before_deploy_only if {
	# The direct query, without an inventory, finds no default-deny NetworkPolicy ...
	count(direct_messages("bad-no-network-policy")) == 1

	# ... which one object at admission cannot show: the webhook admits it.
	answer_for(example_request("bad-no-network-policy")).allowed == true
}

test_allow_stack_parameters_cannot_switch_cross_object_rules_on if {
	parameters := {"require_default_deny_network_policy": true}
	answer := answer_for(example_request("bad-no-network-policy")) with data.data.admission_webhook.parameters as parameters
	answer.allowed == true
}

test_deny_stack_parameters_override_the_settings if {
	request := example_request("bad-unpinned-image")
	parameters := {"allowed_registries": ["docker.io/library/"]}
	answer := answer_for(request) with data.data.admission_webhook.parameters as parameters
	answer.allowed == false
	count(answer.status.details.causes) == 1
	contains(answer.status.message, "must pin its image by digest")
	not contains(answer.status.message, "registry that is not allowed")
}

test_allow_stack_parameters_that_are_not_an_object_are_ignored if {
	answer_for(hardened_pod) == {"uid": "pod-uid", "allowed": true} with data.data.admission_webhook.parameters as "all"
}

test_allow_response_is_a_full_admission_review if {
	review := webhook.response with input as admission_review(hardened_pod)
	review.apiVersion == "admission.k8s.io/v1"
	review.kind == "AdmissionReview"
	review.response == {"uid": "pod-uid", "allowed": true}
}

test_deny_echoes_the_uid if {
	answer := answer_for(example_request("bad-root-pod"))
	answer.uid == "uid-bad-root-pod"
	answer.allowed == false
}

test_deny_message_names_the_resource_the_field_and_the_rule if {
	answer := answer_for(example_request("bad-root-pod"))
	startswith(answer.status.message, "ztml admission policy refused Pod ztml/debug: ")
	contains(answer.status.message, `container "shell" of Pod "debug" must not run as user 0 (field spec.containers[0].securityContext.runAsUser)`)
	{"reason": "FieldValueForbidden", "message": `container "shell" of Pod "debug" must not run as user 0`, "field": "spec.containers[0].securityContext.runAsUser"} in answer.status.details.causes
	answer.status.reason == "Forbidden"
}

test_deny_without_a_request if {
	review := webhook.response with input as {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
	review.response.allowed == false
	review.response.uid == ""
	contains(review.response.status.message, "not an AdmissionReview with a request")
}

test_deny_a_request_that_is_not_an_object if {
	answer := webhook.response.response with input as {"request": "CREATE"}
	answer.allowed == false
}

test_deny_a_request_without_an_object if {
	answer := answer_for({"uid": "u", "operation": "CREATE", "kind": {"kind": "Pod"}})
	answer.allowed == false
	contains(answer.status.message, "no Kubernetes object")
}

test_deny_a_request_without_an_operation_is_judged if {
	request := object.remove(example_request("bad-root-pod"), ["operation"])
	answer_for(request).allowed == false
}

test_deny_update_is_judged if {
	request := object.union(example_request("bad-root-pod"), {"operation": "UPDATE", "oldObject": examples["bad-root-pod"].review.object})
	answer_for(request).allowed == false
}

test_allow_delete_and_connect if {
	every operation in ["DELETE", "CONNECT"] {
		request := object.union(example_request("bad-root-pod"), {"operation": operation})
		answer_for(request) == {"uid": "uid-bad-root-pod", "allowed": true}
	}
}

test_deny_names_a_generated_name if {
	generated := json.patch(hardened_pod, [
		{"op": "remove", "path": "/name"},
		{"op": "replace", "path": "/object/metadata", "value": {"generateName": "model-"}},
		{"op": "add", "path": "/object/spec/hostNetwork", "value": true},
	])
	answer := answer_for(generated)
	startswith(answer.status.message, "ztml admission policy refused Pod ztml/model-<generated>: ")
}

test_deny_names_the_object_when_the_request_has_no_name if {
	unnamed := json.patch(hardened_pod, [
		{"op": "replace", "path": "/name", "value": ""},
		{"op": "add", "path": "/object/spec/hostPID", "value": true},
	])
	startswith(answer_for(unnamed).status.message, "ztml admission policy refused Pod ztml/p: ")
}

test_deny_names_an_unnamed_object if {
	unnamed := json.patch(hardened_pod, [
		{"op": "remove", "path": "/name"},
		{"op": "replace", "path": "/object/metadata", "value": {}},
		{"op": "add", "path": "/object/spec/hostIPC", "value": true},
	])
	startswith(answer_for(unnamed).status.message, "ztml admission policy refused Pod ztml/<unnamed>: ")
}
