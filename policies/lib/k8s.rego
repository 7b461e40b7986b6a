# METADATA
# title: Kubernetes workload helpers
# description: >-
#   Finds the pod spec inside every workload kind and lists the containers of a pod
#   spec with the field path that names each of them in violation details.
package ztml.lib.k8s

# METADATA
# title: Pod spec paths
# description: Where each supported workload kind keeps its pod spec.
pod_spec_paths := {
	"Pod": ["spec"],
	"Deployment": ["spec", "template", "spec"],
	"StatefulSet": ["spec", "template", "spec"],
	"DaemonSet": ["spec", "template", "spec"],
	"ReplicaSet": ["spec", "template", "spec"],
	"Job": ["spec", "template", "spec"],
	"CronJob": ["spec", "jobTemplate", "spec", "template", "spec"],
}

# METADATA
# title: Workload kind
# description: True when kind runs pods.
workload_kind(kind) if pod_spec_paths[kind]

# METADATA
# title: Pod spec of a workload
# description: The pod spec of obj, undefined for kinds that run no pods.
pod_spec(obj) := object.get(obj, pod_spec_paths[obj.kind], {})

# METADATA
# title: Pod spec field path
# description: The dotted path of the pod spec in obj, e.g. spec.template.spec.
pod_spec_path(obj) := concat(".", pod_spec_paths[obj.kind])

# METADATA
# title: Pod metadata
# description: The metadata of the pods obj runs (the pod's own, or its template's).
pod_metadata(obj) := object.get(obj, array.concat(array.slice(pod_spec_paths[obj.kind], 0, count(pod_spec_paths[obj.kind]) - 1), ["metadata"]), {})

# METADATA
# title: Pod metadata path
# description: The dotted path of the pod metadata in obj, e.g. spec.template.metadata.
pod_metadata_path(obj) := concat(".", array.concat(array.slice(pod_spec_paths[obj.kind], 0, count(pod_spec_paths[obj.kind]) - 1), ["metadata"]))

# METADATA
# title: Container list fields
# description: The pod spec fields that hold containers.
container_fields := ["initContainers", "containers", "ephemeralContainers"]

# METADATA
# title: Containers of a pod spec
# description: >-
#   Every container of the pod spec (init, regular and ephemeral) as
#   {"container": <container>, "name": <name>, "kind": <list field>, "path": <field path>}.
containers(obj) := {c |
	spec := pod_spec(obj)
	some field in container_fields
	some i, container in object.get(spec, field, [])
	c := {
		"container": container,
		"name": object.get(container, "name", sprintf("%s[%d]", [field, i])),
		"kind": field,
		"path": sprintf("%s.%s[%d]", [pod_spec_path(obj), field, i]),
	}
}

# METADATA
# title: Object name
# description: metadata.name of obj, or "<unnamed>" when it is missing.
name(obj) := object.get(obj, ["metadata", "name"], "<unnamed>")

# METADATA
# title: Object namespace
# description: metadata.namespace of obj, or "default" when it is missing.
namespace(obj) := object.get(obj, ["metadata", "namespace"], "default")
