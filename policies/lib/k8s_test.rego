package ztml.lib.k8s_test

import data.ztml.lib.k8s as lib

pod_spec := {"containers": [{"name": "app", "image": "x"}], "initContainers": [{"name": "init"}]}

workload(kind) := {"kind": kind, "metadata": {"name": "w"}, "spec": {"template": {"spec": pod_spec}}}

cronjob := {"kind": "CronJob", "metadata": {"name": "c", "namespace": "ns"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}}

test_allow_pod_spec_of_pod if {
	lib.pod_spec({"kind": "Pod", "spec": pod_spec}) == pod_spec
}

test_allow_pod_spec_of_templated_workloads if {
	every kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"] {
		lib.pod_spec(workload(kind)) == pod_spec
		lib.pod_spec_path(workload(kind)) == "spec.template.spec"
	}
}

test_allow_pod_spec_of_cronjob if {
	lib.pod_spec(cronjob) == pod_spec
	lib.pod_spec_path(cronjob) == "spec.jobTemplate.spec.template.spec"
}

test_deny_pod_spec_of_service if {
	not lib.pod_spec({"kind": "Service", "spec": {}})
	not lib.workload_kind("Service")
}

test_allow_workload_kind if lib.workload_kind("CronJob")

test_allow_containers_lists_init_and_regular if {
	found := {[c.kind, c.name, c.path] | some c in lib.containers(workload("Deployment"))}
	found == {
		["containers", "app", "spec.template.spec.containers[0]"],
		["initContainers", "init", "spec.template.spec.initContainers[0]"],
	}
}

test_allow_containers_names_unnamed_by_index if {
	names := {c.name | some c in lib.containers({"kind": "Pod", "spec": {"ephemeralContainers": [{"image": "x"}]}})}
	names == {"ephemeralContainers[0]"}
}

test_allow_name_and_namespace if {
	lib.name(cronjob) == "c"
	lib.namespace(cronjob) == "ns"
}

test_deny_missing_name_and_namespace_use_placeholders if {
	lib.name({}) == "<unnamed>"
	lib.namespace({}) == "default"
}

test_allow_pod_metadata_of_pod_and_template if {
	lib.pod_metadata({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}}) == {"name": "p"}
	lib.pod_metadata_path({"kind": "Pod"}) == "metadata"
	lib.pod_metadata(cronjob) == {}
	lib.pod_metadata_path(cronjob) == "spec.jobTemplate.spec.template.metadata"
	labelled := {"kind": "Deployment", "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}}}
	lib.pod_metadata(labelled) == {"labels": {"a": "b"}}
}
