# Network rules: every namespace that runs workloads needs a default-deny
# NetworkPolicy (checked in Gatekeeper's data.inventory), and Services may not be
# exposed outside the cluster unless the settings list them.
package ztml.admission

# METADATA
# title: Default-deny NetworkPolicy present
# description: >-
#   True when data.inventory holds a NetworkPolicy in the object's namespace that
#   selects every pod, covers Ingress and Egress and allows nothing.
default_deny_present if {
	inventory := object.get(data.inventory, ["namespace", namespace, "networking.k8s.io/v1", "NetworkPolicy"], {})
	some policy in inventory
	default_deny(policy)
}

# METADATA
# title: Default-deny NetworkPolicy
# description: An empty podSelector, policyTypes Ingress and Egress, and no ingress or egress rules.
default_deny(policy) if {
	selector := object.get(policy, ["spec", "podSelector"], {})
	count(object.get(selector, "matchLabels", {})) == 0
	count(object.get(selector, "matchExpressions", [])) == 0
	types := {t | some t in object.get(policy, ["spec", "policyTypes"], [])}
	{"Ingress", "Egress"} == types
	count(object.get(policy, ["spec", "ingress"], [])) == 0
	count(object.get(policy, ["spec", "egress"], [])) == 0
}

# METADATA
# title: Namespace without default-deny
# description: A workload may run only in a namespace with a default-deny NetworkPolicy for ingress and egress.
deny contains violation_of(
	sprintf("namespace %q has no default-deny NetworkPolicy (empty podSelector, policyTypes [Ingress, Egress], no rules) for %s %q", [namespace, kind, name]),
	null, "metadata.namespace", namespace,
) if {
	workload
	settings.require_default_deny_network_policy == true
	not default_deny_present
}

# METADATA
# title: Exposed Service
# description: NodePort and LoadBalancer Services are denied unless external_services lists "<namespace>/<name>".
deny contains violation_of(
	sprintf("Service %q must not be of type %s (allowed only for %v)", [name, reviewed.spec.type, settings.external_services]),
	null, "spec.type", reviewed.spec.type,
) if {
	kind == "Service"
	not deleting
	reviewed.spec.type in {"NodePort", "LoadBalancer"}
	not sprintf("%s/%s", [namespace, name]) in settings.external_services
}
