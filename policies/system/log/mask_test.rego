package system.log_test

import data.system.log as decision_log

event(inp) := {"decision_id": "1", "path": "ztml/authz/decision", "input": inp, "result": {"allow": true}}

test_deny_raw_features_in_log if {
	masked := decision_log.mask with input as event({"request": {"features": [[0.1]]}})
	"/input/request/features" in masked
}

test_deny_request_body_in_log if {
	"/input/request/body" in decision_log.mask with input as event({"request": {"body": "{}"}})
}

test_deny_instances_in_log if {
	"/input/instances" in decision_log.mask with input as event({"instances": [[0.0]]})
}

test_deny_tokens_in_log if {
	masked := decision_log.mask with input as event({"token": "t"})
	"/input/token" in masked
	"/input/subject/token" in masked
	"/input/headers/authorization" in masked
}

test_allow_decision_fields_stay_in_log if {
	masked := decision_log.mask with input as event({"subject": {"sub": "alice"}})
	not "/input/subject" in masked
	not "/input/subject/sub" in masked
	not "/input/action" in masked
	not "/result" in masked
}
