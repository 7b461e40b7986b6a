# Tests of the authz input validation (input.rego). They share the helpers of
# authz_test.rego: both files are package ztml.authz_test.
package ztml.authz_test

import data.ztml.authz as policy

test_deny_empty_input if {
	d := decide({})
	denied(d, "subject.sub is missing")
	denied(d, "model.digest is missing")
	denied(d, "monitor.flood is missing")
	count(d.reasons) == count(policy.fields)
}

test_deny_non_object_input if {
	d := decide("predict please")
	denied(d, "input must be a JSON object")
}

test_deny_missing_monitor if {
	d := decide(object.remove(base, ["monitor"]))
	denied(d, "monitor.rate_per_minute is missing")
}

test_deny_ill_typed_batch_size if {
	denied(decide(request({"request": {"batch_size": "4"}})), "request.batch_size is missing or invalid")
	denied(decide(request({"request": {"batch_size": 2.5}})), "request.batch_size is missing or invalid")
}

test_deny_ill_typed_roles if {
	denied(decide(request({"subject": {"roles": "admin"}})), "subject.roles is missing or invalid")
}

test_deny_bad_digest if {
	denied(decide(request({"model": {"digest": "md5:abc"}})), "model.digest is missing or invalid")
}

test_deny_unknown_action if {
	denied(decide(request({"action": "delete"})), "input field action is missing or invalid")
}

test_deny_unknown_risk_tier if {
	denied(decide(request({"model": {"risk_tier": "none"}})), "model.risk_tier is missing or invalid")
}

test_deny_missing_model_max_batch if {
	d := decide(json.remove(base, ["model/max_batch"]))
	denied(d, "input field model.max_batch is missing or invalid: expected an integer >= 1")
	count(d.reasons) == 1
}

test_deny_ill_typed_model_max_batch if {
	every bad in ["16", 0, -4, 2.5, null, true] {
		denied(decide(request({"model": {"max_batch": bad}})), "input field model.max_batch is missing or invalid")
	}
}

test_deny_missing_model_explanations if {
	d := decide(json.remove(base, ["model/explanations"]))
	denied(d, "input field model.explanations is missing or invalid: expected a boolean")
	count(d.reasons) == 1
}

test_deny_ill_typed_model_explanations if {
	every bad in ["true", 1, null, {}] {
		denied(decide(request({"model": {"explanations": bad}})), "input field model.explanations is missing or invalid")
	}
}

test_allow_model_limits_and_rights_are_valid if {
	policy.valid with input as request({"model": {"max_batch": 1, "explanations": false}})
}

test_deny_bad_time if {
	denied(decide(request({"request": {"time": "noon"}})), "request.time is missing or invalid")
}

test_deny_suspicion_out_of_range if {
	denied(decide(request({"monitor": {"extraction_suspicion": 3}})), "monitor.extraction_suspicion is missing or invalid")
}

test_deny_string_flag if {
	denied(decide(request({"monitor": {"flood": "false"}})), "monitor.flood is missing or invalid")
}

test_deny_blank_tenant if {
	denied(decide(request({"subject": {"tenant": ""}})), "subject.tenant is missing or invalid")
}

test_deny_roles_with_a_non_string if {
	denied(decide(request({"subject": {"roles": ["predictor", 7]}})), "subject.roles is missing or invalid")
}

test_deny_blank_scope if {
	denied(decide(request({"subject": {"scopes": ["predict", ""]}})), "subject.scopes is missing or invalid")
}

test_deny_rate_as_string if {
	denied(decide(request({"monitor": {"rate_per_minute": "12"}})), "monitor.rate_per_minute is missing or invalid")
}

test_deny_negative_rate if {
	denied(decide(request({"monitor": {"rate_per_minute": -1}})), "monitor.rate_per_minute is missing or invalid")
}

test_deny_negative_batch_size if {
	denied(decide(request({"request": {"batch_size": -2}})), "request.batch_size is missing or invalid")
}

test_deny_numeric_flag if {
	denied(decide(request({"monitor": {"drift": 0}})), "monitor.drift is missing or invalid")
}

test_deny_numeric_client_address if {
	denied(decide(request({"request": {"client_address": 127}})), "request.client_address is missing or invalid")
}

test_deny_uppercase_digest if {
	denied(decide(request({"model": {"digest": upper(digest)}})), "model.digest is missing or invalid")
}

# True when valid does not hold for inp.
not_valid(inp) if not policy.valid with input as inp

test_deny_each_listed_field_is_required_by_valid if {
	every path, _ in policy.fields {
		not_valid(json.remove(base, [replace(path, ".", "/")]))
	}
}

test_deny_each_listed_field_must_not_be_null if {
	every path, _ in policy.fields {
		pointer := concat("", ["/", replace(path, ".", "/")])
		inp := json.patch(base, [{"op": "replace", "path": pointer, "value": null}])
		not_valid(inp)
		some reason in policy.reasons with input as inp
		contains(reason, concat("", ["input field ", path, " "]))
	}
}

test_allow_every_action_and_tier_is_valid if {
	every action in policy.actions {
		policy.valid with input as request({"action": action})
	}
	every tier, _ in policy.tier_rank {
		policy.valid with input as request({"model": {"risk_tier": tier}})
	}
}

test_allow_base_input_is_valid if {
	policy.valid with input as base
	count(policy.invalid) == 0 with input as base
}
