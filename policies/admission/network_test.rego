package ztml.admission_test

import data.ztml.admission as adm

service(type) := {
	"apiVersion": "v1", "kind": "Service", "metadata": {"name": "digits", "namespace": "ztml"},
	"spec": {"type": type, "ports": [{"port": 80}]},
}

# The findings for obj with the given inventory.
findings_with(obj, inv) := result if {
	result := adm.deny with input as review(obj) with data.inventory as inv
}

# An inventory holding policy as the namespace's only NetworkPolicy.
inventory_with(policy) := {"namespace": {"ztml": {"networking.k8s.io/v1": {"NetworkPolicy": {"p": policy}}}}}

test_deny_namespace_without_network_policy if {
	result := adm.deny with input as review(deployment(good_pod_spec))
	details := details_of(result, "has no default-deny NetworkPolicy")
	details.namespace == "ztml"
}

test_deny_network_policy_in_other_namespace if {
	inv := {"namespace": {"other": inventory.namespace.ztml}}
	has_finding(findings_with(deployment(good_pod_spec), inv), "has no default-deny NetworkPolicy")
}

test_deny_network_policy_with_selector if {
	policy := object.union(default_deny_policy, {"spec": {"podSelector": {"matchLabels": {"app": "x"}}}})
	has_finding(findings_with(deployment(good_pod_spec), inventory_with(policy)), "has no default-deny NetworkPolicy")
}

test_deny_network_policy_ingress_only if {
	policy := object.union(default_deny_policy, {"spec": {"policyTypes": ["Ingress"]}})
	has_finding(findings_with(deployment(good_pod_spec), inventory_with(policy)), "has no default-deny NetworkPolicy")
}

test_deny_network_policy_with_allow_rule if {
	policy := object.union(default_deny_policy, {"spec": {"ingress": [{"from": [{"podSelector": {}}]}]}})
	has_finding(findings_with(deployment(good_pod_spec), inventory_with(policy)), "has no default-deny NetworkPolicy")
}

test_allow_default_deny_beside_allow_policies if {
	allow_dns := {"spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 53}]}]}}
	inv := {"namespace": {"ztml": {"networking.k8s.io/v1": {"NetworkPolicy": {"default-deny": default_deny_policy, "dns": allow_dns}}}}}
	count(findings_with(deployment(good_pod_spec), inv)) == 0
}

test_allow_network_policy_check_disabled_by_parameter if {
	result := adm.deny with input as {"review": {"object": deployment(good_pod_spec)}, "parameters": {"require_default_deny_network_policy": false}}
	count(result) == 0
}

test_allow_cluster_ip_service if {
	count(findings(service("ClusterIP"))) == 0
}

test_deny_node_port_service if {
	details := details_of(findings(service("NodePort")), "must not be of type NodePort")
	details.field == "spec.type"
}

test_deny_load_balancer_service if {
	has_finding(findings(service("LoadBalancer")), "must not be of type LoadBalancer")
}

test_allow_listed_external_service if {
	result := adm.deny with input as review(service("LoadBalancer")) with data.data.admission.external_services as ["ztml/digits"]
	count(result) == 0
}
