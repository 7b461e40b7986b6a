# METADATA
# title: Decision log mask
# description: >-
#   OPA evaluates data.system.log.mask on every decision log event before it is
#   written. Each JSON pointer listed here is erased from the event, so raw model
#   inputs and credentials never reach decision logs; OPA records the erased
#   paths in the event's "erased" field. For the admission webhook's decisions
#   (an AdmissionReview as the input) it erases every env value of the reviewed
#   object, the previous object of an UPDATE and kubectl's last-applied copy of
#   the object: the decision's findings name the variables, never their values.
#   OPA evaluates the mask with the decision log event as the input, so the
#   decision's own input is input.input here.
package system.log

import data.ztml.lib.k8s

# METADATA
# title: Raw model inputs
# description: Feature vectors and request bodies are raw model inputs.
mask contains path if {
	some path in raw_input_paths
}

# METADATA
# title: Credentials
# description: Bearer tokens and authorization headers.
mask contains path if {
	some path in credential_paths
}

# METADATA
# title: Previous object of an update
# description: An UPDATE's oldObject is not needed to audit the decision and may hold credentials.
mask contains "/input/request/oldObject" if is_object(input.input.request.oldObject)

# METADATA
# title: Environment values under review
# description: >-
#   Every env value of every container (init, regular, ephemeral) of the object an
#   AdmissionReview carries; the variables' names stay.
mask contains pointer if {
	reviewed := input.input.request.object
	spec_path := k8s.pod_spec_paths[reviewed.kind]
	some field in k8s.container_fields
	some i, container in object.get(reviewed, array.concat(spec_path, [field]), [])
	some j, variable in object.get(container, "env", [])
	"value" in object.keys(variable)
	steps := array.concat(spec_path, [field, format_int(i, 10), "env", format_int(j, 10), "value"])
	pointer := concat("/", array.concat(["", "input", "request", "object"], steps))
}

# METADATA
# title: Last applied configuration
# description: >-
#   kubectl's copy of the whole object in an annotation (env values included) is
#   removed from the logged annotations; the other annotations stay.
mask contains {"op": "upsert", "path": "/input/request/object/metadata/annotations", "value": kept} if {
	annotations := input.input.request.object.metadata.annotations
	last_applied_annotation in object.keys(annotations)
	kept := object.remove(annotations, [last_applied_annotation])
}

# METADATA
# title: Raw input pointers
# description: Where callers put raw model inputs in a decision's input.
raw_input_paths := {
	"/input/request/features",
	"/input/request/instances",
	"/input/request/inputs",
	"/input/request/body",
	"/input/instances",
	"/input/features",
	"/input/inputs",
}

# METADATA
# title: Credential pointers
# description: Where callers may put tokens in a decision's input.
credential_paths := {
	"/input/token",
	"/input/headers/authorization",
	"/input/headers/Authorization",
	"/input/subject/token",
	"/input/request/token",
}

# METADATA
# title: Last-applied annotation key
# description: The annotation kubectl apply writes.
last_applied_annotation := "kubectl.kubernetes.io/last-applied-configuration"
