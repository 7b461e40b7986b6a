# METADATA
# title: OPA API authorization
# description: >-
#   OPA evaluates data.system.authz.allow for every call of its HTTP API when it runs
#   with --authorization=basic, as the admission webhook's OPA does: the API server
#   may ask for the webhook's answer and the kubelet for /health, and nothing may
#   read, replace or delete policies or data. The model pod's OPA sidecar serves
#   a Unix socket only its own pod can open and does not use this policy.
package system.authz

# METADATA
# title: Default
# description: Every API call is refused unless a rule below allows it.
default allow := false

# METADATA
# title: Admission webhook
# description: The API server POSTs an AdmissionReview to the webhook's decision.
allow if {
	input.method == "POST"
	input.path == ["v0", "data", "ztml", "admission", "webhook", "response"]
}

# METADATA
# title: Health
# description: The kubelet's probes read /health (served on the diagnostic port too).
allow if {
	input.method == "GET"
	input.path == ["health"]
}
