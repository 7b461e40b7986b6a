# METADATA
# title: Admission webhook
# description: >-
#   The API server's entry to data.ztml.admission. The input is the
#   admission.k8s.io/v1 AdmissionReview the API server POSTs to
#   /v0/data/ztml/admission/webhook/response (OPA's v0 API takes the body as the
#   input and answers with the value alone); the answer is the AdmissionReview
#   response. The rules are data.ztml.admission's, run on input.request.object:
#   no rule is written twice. Rules that need other cluster state run before
#   deploy only (before_deploy_only says which).
# entrypoint: true
package ztml.admission.webhook

import data.ztml.admission

# METADATA
# title: Admitted operations
# description: >-
#   DELETE and CONNECT are always admitted; every other operation (CREATE, UPDATE,
#   and a request without an operation) is judged.
admitted_operations := {"DELETE", "CONNECT"}

# METADATA
# title: Before-deploy-only settings
# description: >-
#   Settings that switch off the rules that need other cluster state. "A namespace
#   that runs workloads has a default-deny NetworkPolicy" reads Gatekeeper's
#   data.inventory, which one object under review cannot show, so at admission
#   the rule is off; the deploy checks (OPA over the declared manifests, the
#   CrossGuard pack) run it with the whole stack as the inventory.
before_deploy_only := {"require_default_deny_network_policy": false}

# METADATA
# title: Stack parameters
# description: >-
#   Settings the stack gives its webhook (ztml:admissionParameters), loaded as
#   data.data.admission_webhook.parameters; none by default.
default stack_parameters := {}

# METADATA
# title: Stack parameters (loaded)
# description: The parameters of the loaded webhook settings, when they are an object.
stack_parameters := data.data.admission_webhook.parameters if is_object(data.data.admission_webhook.parameters)

# METADATA
# title: Parameters
# description: The stack's parameters, with the before-deploy-only rules switched off.
parameters := object.union(stack_parameters, before_deploy_only)

# METADATA
# title: Request
# description: The AdmissionReview's request; empty when there is none.
default request := {}

# METADATA
# title: Request (given)
# description: input.request when it is an object.
request := input.request if is_object(input.request)

# METADATA
# title: Request UID
# description: The request's uid, echoed in the response; empty when there is none.
uid := object.get(request, "uid", "")

# METADATA
# title: Judged
# description: True for a request whose operation is not DELETE or CONNECT.
judged if {
	has_request
	not object.get(request, "operation", "") in admitted_operations
}

# METADATA
# title: Has a request
# description: True when input.request is an object.
has_request if is_object(input.request)

# METADATA
# title: Findings
# description: >-
#   The findings of data.ztml.admission.deny for the request, reviewed as Gatekeeper
#   would (an AdmissionRequest is Gatekeeper's review), with the parameters above.
findings := found if {
	judged
	found := admission.deny with input as {"review": request, "parameters": parameters}
}

# METADATA
# title: No request
# description: An input without an AdmissionReview request is refused (fail closed).
findings := {{
	"msg": "input is not an AdmissionReview with a request (expected input.request)",
	"details": {"kind": null, "name": null, "namespace": null, "container": null, "field": "request", "value": null},
}} if {
	not has_request
}

# METADATA
# title: Allowed
# description: True when the request is not judged, or judged without a finding.
allowed if {
	has_request
	not judged
}

# METADATA
# title: Allowed (no finding)
# description: A judged request without any finding.
allowed if count(findings) == 0

# METADATA
# title: Sorted findings
# description: The findings sorted, so the message is the same for the same object.
sorted_findings := sort([finding | some finding in findings])

# METADATA
# title: Reviewed resource
# description: Kind, namespace and name of the object under review, e.g. "Pod ztml/debug".
default resource := "a request"

# METADATA
# title: Reviewed resource (given)
# description: Kind, namespace and name of the object under review.
resource := sprintf("%s %s/%s", [
	object.get(request, ["kind", "kind"], "<unknown kind>"),
	object.get(request, "namespace", ""),
	resource_name,
]) if {
	has_request
}

# METADATA
# title: Reviewed name
# description: The request's name, else the object's name or generateName prefix.
default resource_name := "<unnamed>"

# METADATA
# title: Reviewed name (given)
# description: The first name found (the request's, the object's, its generateName prefix).
resource_name := request.name if {
	is_string(request.name)
	request.name != ""
} else := request.object.metadata.name if {
	is_string(request.object.metadata.name)
} else := sprintf("%s<generated>", [request.object.metadata.generateName]) if {
	is_string(request.object.metadata.generateName)
}

# METADATA
# title: Finding text
# description: One finding as text, its message followed by the field it is about.
finding_text(finding) := sprintf("%s (field %v)", [finding.msg, finding.details.field])

# METADATA
# title: Denial message
# description: The resource, then every finding's message and field, in order.
message := sprintf("ztml admission policy refused %s: %s", [
	resource,
	concat("; ", [finding_text(finding) | some finding in sorted_findings]),
])

# METADATA
# title: Denial causes
# description: One cause per finding, for clients that read the status's details.
causes := [{"reason": "FieldValueForbidden", "message": finding.msg, "field": sprintf("%v", [finding.details.field])} |
	some finding in sorted_findings
]

# METADATA
# title: Admission response (allowed)
# description: An admitted request.
answer := {"uid": uid, "allowed": true} if allowed

# METADATA
# title: Admission response (refused)
# description: A refused request with a 403 status naming the resource, fields and rules.
answer := {
	"uid": uid,
	"allowed": false,
	"status": {
		"status": "Failure",
		"code": 403,
		"reason": "Forbidden",
		"message": message,
		"details": {"causes": causes},
	},
} if {
	not allowed
}

# METADATA
# title: AdmissionReview response
# description: What the API server reads back; always defined, so OPA never answers 404.
response := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": answer,
}
