# METADATA
# title: Kubernetes admission
# description: >-
#   Checks Kubernetes resources before they reach the cluster: Pod Security
#   Standards "restricted", hardened containers, pinned images from allowed
#   registries, no secrets in environment variables, default-deny network
#   policies and no externally exposed Services. The input is Gatekeeper's
#   {"review": {"object": ...}}; a bare manifest (as conftest passes it) works too.
#   Query data.ztml.admission.deny: a set of {"msg", "details"}; empty means admit.
# entrypoint: true
package ztml.admission

import data.ztml.lib.k8s

# METADATA
# title: Built-in settings
# description: >-
#   Fail-closed defaults used when neither data.data.admission nor Gatekeeper
#   parameters say otherwise: no registry is trusted until configured.
defaults := {
	"allowed_registries": [],
	"allowed_capabilities": ["NET_BIND_SERVICE"],
	"allowed_volume_types": [
		"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
		"persistentVolumeClaim", "projected", "secret",
	],
	"allowed_seccomp_types": ["RuntimeDefault", "Localhost"],
	"external_services": [],
	"require_default_deny_network_policy": true,
}

# METADATA
# title: Settings from data
# description: policies/data/admission.json, when loaded.
default data_settings := {}

# METADATA
# title: Settings from data (loaded)
# description: The admission settings of the data document.
data_settings := data.data.admission

# METADATA
# title: Gatekeeper parameters
# description: A constraint's parameters override the data settings.
default parameters := {}

# METADATA
# title: Gatekeeper parameters (given)
# description: input.parameters when it is an object.
parameters := input.parameters if is_object(input.parameters)

# METADATA
# title: Effective settings
# description: Built-in defaults, overridden by data, overridden by parameters.
settings := object.union(object.union(defaults, data_settings), parameters)

# METADATA
# title: Reviewed object
# description: The object under review, in the Gatekeeper input shape.
reviewed := input.review.object

# METADATA
# title: Reviewed object (bare manifest)
# description: A bare manifest given as the input itself, as conftest does.
reviewed := input if {
	not input.review
	input.kind
}

# METADATA
# title: Deleting
# description: Deleting a resource is always admitted.
deleting if input.review.operation == "DELETE"

# METADATA
# title: Object kind
# description: The kind of the reviewed object.
kind := reviewed.kind

# METADATA
# title: Object name
# description: The name of the reviewed object.
name := k8s.name(reviewed)

# METADATA
# title: Object namespace
# description: The namespace of the reviewed object (the review's namespace first).
namespace := input.review.namespace if {
	is_string(input.review.namespace)
	input.review.namespace != ""
} else := k8s.namespace(reviewed)

# METADATA
# title: Workload
# description: True when the reviewed object runs pods and is not being deleted.
workload if {
	k8s.workload_kind(kind)
	not deleting
}

# METADATA
# title: Pod spec
# description: The pod spec of the reviewed workload.
spec := k8s.pod_spec(reviewed) if workload

# METADATA
# title: Pod spec path
# description: The field path of the pod spec, for violation details.
spec_path := k8s.pod_spec_path(reviewed) if workload

# METADATA
# title: Containers
# description: Every container of the workload (init, regular, ephemeral) with its field path.
containers := k8s.containers(reviewed) if workload

# METADATA
# title: Pod security context
# description: The pod-level securityContext, empty when unset.
pod_sc := object.get(spec, "securityContext", {})

# METADATA
# title: Container security context
# description: A container's securityContext, empty when unset.
container_sc(c) := object.get(c.container, "securityContext", {})

# METADATA
# title: Violation
# description: Builds a violation naming the object, container, field and offending value.
violation_of(msg, container, field, value) := {
	"msg": msg,
	"details": {
		"kind": kind,
		"name": name,
		"namespace": namespace,
		"container": container,
		"field": field,
		"value": value,
	},
}

# METADATA
# title: No object to review
# description: An input without a Kubernetes object is denied, not silently admitted.
deny contains {
	"msg": "input has no Kubernetes object (expected input.review.object)",
	"details": {"kind": null, "name": null, "namespace": null, "container": null, "field": "review.object", "value": null},
} if {
	not reviewed.kind
}

# METADATA
# title: Gatekeeper violations
# description: The same findings under the rule name Gatekeeper's ConstraintTemplates use.
violation contains finding if some finding in deny

# METADATA
# title: Decision
# description: The findings as a sorted list with an allow flag, for callers that want one answer.
decision := {
	"allow": count(deny) == 0,
	"violations": sort([finding | some finding in deny]),
}
