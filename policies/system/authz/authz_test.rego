package system.authz_test

import data.system.authz

call(method, path) := {"method": method, "path": path, "headers": {}, "params": {}}

test_allow_the_webhook_decision if {
	authz.allow with input as call("POST", ["v0", "data", "ztml", "admission", "webhook", "response"])
}

test_allow_health if {
	authz.allow with input as call("GET", ["health"])
}

test_deny_policy_and_data_changes if {
	every path in [["v1", "policies", "x"], ["v1", "data", "ztml"], ["v1", "data"]] {
		every method in ["PUT", "PATCH", "DELETE", "POST"] {
			not authz.allow with input as call(method, path)
		}
	}
}

test_deny_reading_policies_data_and_other_decisions if {
	not authz.allow with input as call("GET", ["v1", "policies"])
	not authz.allow with input as call("GET", ["v1", "data"])
	not authz.allow with input as call("POST", ["v0", "data", "ztml", "authz", "decision"])
	not authz.allow with input as call("GET", ["v0", "data", "ztml", "admission", "webhook", "response"])
	not authz.allow with input as call("GET", ["metrics"])
}

test_deny_an_input_without_a_path if {
	not authz.allow with input as {"method": "POST"}
}
