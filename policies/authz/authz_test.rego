package ztml.authz_test

import data.ztml.authz as policy

digest := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

base := {
	"subject": {"sub": "alice", "roles": ["predictor"], "tenant": "demo", "scopes": ["predict", "explain", "metadata", "admin"]},
	"action": "predict",
	"model": {"name": "digits", "digest": digest, "tenant": "demo", "risk_tier": "low", "max_batch": 256, "explanations": true},
	"request": {"batch_size": 4, "client_address": "127.0.0.1", "time": "2026-11-22T10:00:00Z"},
	"monitor": {
		"rate_per_minute": 12.0, "extraction_suspicion": 0.1, "extraction_flagged": false,
		"flood": false, "drift": false, "flagged_input": false,
	},
}

# An input with overrides merged (recursively) into the base request.
request(overrides) := object.union(base, overrides)

# The same request made by a subject holding roles.
as_roles(roles, overrides) := object.union(request(overrides), {"subject": {"roles": roles}})

decide(inp) := d if {
	d := policy.decision with input as inp
}

# True when some reason of the decision contains fragment.
has_reason(decision, fragment) if {
	some reason in decision.reasons
	contains(reason, fragment)
}

denied(decision, fragment) if {
	decision.allow == false
	has_reason(decision, fragment)
}

# --- allowed calls -----------------------------------------------------------

test_allow_predict_for_predictor if {
	d := decide(base)
	d.allow == true
	d.reasons == []
	d.obligations == {"max_batch_size": 64, "explanations_allowed": false, "flagged_input": "serve_and_flag", "rate_limit_per_minute": 120}
}

test_allow_metadata_for_viewer if {
	d := decide(as_roles(["viewer"], {"action": "metadata", "request": {"batch_size": 0}}))
	d.allow == true
}

test_allow_explain_for_analyst_with_explanations if {
	d := decide(as_roles(["analyst"], {"action": "explain"}))
	d.allow == true
	d.obligations.explanations_allowed == true
}

test_allow_admin_action_for_admin if {
	d := decide(as_roles(["admin"], {"action": "admin", "request": {"batch_size": 0}}))
	d.allow == true
}

test_allow_high_risk_model_for_model_owner if {
	d := decide(as_roles(["model-owner"], {"model": {"risk_tier": "high"}}))
	d.allow == true
	d.obligations.max_batch_size == 16
	d.obligations.flagged_input == "reject"
}

test_allow_high_risk_model_for_admin if {
	d := decide(as_roles(["admin"], {"model": {"risk_tier": "high"}}))
	d.allow == true
}

test_allow_multiple_roles_take_the_largest_limits if {
	d := decide(as_roles(["predictor", "analyst"], {}))
	d.allow == true
	d.obligations.max_batch_size == 64
	d.obligations.rate_limit_per_minute == 120
	d.obligations.explanations_allowed == true
}

test_allow_unknown_role_is_ignored_beside_a_known_one if {
	d := decide(as_roles(["predictor", "superuser"], {}))
	d.allow == true
}

test_allow_medium_risk_uses_medium_batch_limit if {
	d := decide(request({"model": {"risk_tier": "medium"}, "request": {"batch_size": 32}}))
	d.allow == true
	d.obligations.max_batch_size == 32
}

test_allow_flagged_input_is_served_and_flagged_on_low_risk if {
	d := decide(request({"monitor": {"flagged_input": true}}))
	d.allow == true
	d.obligations.flagged_input == "serve_and_flag"
}

test_allow_drift_alone_does_not_deny if {
	d := decide(request({"monitor": {"drift": true}}))
	d.allow == true
}

# --- RBAC ----------------------------------------------------------------------

test_deny_without_role_data if {
	d := policy.decision with input as base with data.data.roles as {}
	denied(d, "role data is not loaded")
}

test_deny_unknown_role if {
	denied(decide(as_roles(["superuser"], {})), "has no known role")
}

test_deny_no_roles if {
	denied(decide(as_roles([], {})), "has no known role")
}

test_deny_predict_for_viewer if {
	denied(decide(as_roles(["viewer"], {})), "may not perform action \"predict\"")
}

test_deny_explain_for_predictor if {
	d := decide(request({"action": "explain"}))
	denied(d, "explanations leak model information")
	d.obligations.explanations_allowed == false
}

test_deny_admin_action_for_model_owner if {
	denied(decide(as_roles(["model-owner"], {"action": "admin"})), "admin actions require the admin role")
}

test_deny_action_outside_token_scopes if {
	denied(decide(request({"subject": {"scopes": ["metadata"]}})), "do not include action \"predict\"")
}

# --- ABAC: tenant and risk tier ------------------------------------------------------

test_deny_cross_tenant if {
	denied(decide(request({"subject": {"tenant": "acme"}})), "subject tenant \"acme\" may not access model")
}

test_deny_cross_tenant_even_for_admin if {
	denied(decide(as_roles(["admin"], {"subject": {"tenant": "acme"}})), "may not access model")
}

test_deny_high_risk_model_for_predictor if {
	denied(decide(request({"model": {"risk_tier": "high"}})), "is high risk and requires one of the roles [\"admin\", \"model-owner\"]")
}

test_deny_high_risk_model_for_analyst if {
	denied(decide(as_roles(["analyst"], {"action": "explain", "model": {"risk_tier": "high"}})), "is high risk")
}

test_allow_risk_tier_is_the_registered_tier if {
	every tier, _ in policy.tier_rank {
		policy.risk_tier == tier with input as request({"model": {"risk_tier": tier}})
	}
}

test_deny_unknown_tier_counts_as_high if {
	policy.risk_tier == "high" with input as request({"model": {"risk_tier": "extreme"}})
}

test_deny_missing_tier_counts_as_high if {
	policy.risk_tier == "high" with input as json.remove(base, ["model/risk_tier"])
}

# The model facts come from input.model alone: a model table in the data (the former
# policies/data/models.json) neither raises nor lowers the registered tier.
test_allow_model_data_is_not_read if {
	models := {"demo/digits": {"name": "digits", "tenant": "demo", "risk_tier": "high"}}
	d := policy.decision with input as base with data.data.models as models
	d.allow == true
	policy.risk_tier == "low" with input as base with data.data.models as models
	policy.risk_tier == "medium" with input as request({"model": {"risk_tier": "medium"}}) with data.data.models as {"demo/digits": {"risk_tier": "low"}}
}

test_allow_without_model_data if {
	d := policy.decision with input as base with data.data as {"roles": data.data.roles}
	d.allow == true
}

test_deny_high_risk_registration_without_model_data if {
	inp := request({"model": {"risk_tier": "high"}})
	d := policy.decision with input as inp with data.data as {"roles": data.data.roles}
	denied(d, "is high risk")
}

# --- monitor signals ---------------------------------------------------------------

test_deny_flood if {
	denied(decide(request({"monitor": {"flood": true}})), "request flood detected")
}

test_deny_extraction_flagged if {
	d := decide(request({"monitor": {"extraction_flagged": true, "extraction_suspicion": 0.93}}))
	denied(d, "model extraction suspected by the monitor (suspicion 0.93)")
	d.obligations.flagged_input == "reject"
}

test_deny_extraction_flagged_sets_reject_obligation if {
	policy.flagged_input == "reject" with input as request({"monitor": {"extraction_flagged": true}})
}

test_deny_flagged_input_on_high_risk_model if {
	d := decide(as_roles(["model-owner"], {"model": {"risk_tier": "high"}, "monitor": {"flagged_input": true}}))
	denied(d, "flagged input rejected (model risk tier high)")
}

test_deny_rate_over_role_limit if {
	denied(decide(request({"monitor": {"rate_per_minute": 121}})), "request rate 121 per minute exceeds the limit of 120")
}

# --- explanation rights ----------------------------------------------------------

test_deny_explain_without_explanation_rights if {
	d := decide(as_roles(["analyst"], {"action": "explain", "model": {"explanations": false}}))
	d.allow == false
	d.reasons == ["model \"digits\" was registered without explanation rights"]
	d.obligations.explanations_allowed == false
}

test_deny_explain_without_explanation_rights_even_for_admin if {
	inp := as_roles(["admin"], {"action": "explain", "model": {"name": "breast-cancer", "explanations": false}})
	denied(decide(inp), "model \"breast-cancer\" was registered without explanation rights")
}

test_allow_predict_without_explanation_rights if {
	d := decide(as_roles(["analyst"], {"model": {"explanations": false}}))
	d.allow == true
	d.obligations.explanations_allowed == false
}

test_deny_explanations_obligation_needs_the_registration if {
	not policy.explanations_allowed with input as as_roles(["analyst"], {"model": {"explanations": false}})
	policy.explanations_allowed with input as as_roles(["analyst"], {})
}

test_deny_explain_lists_role_and_registration_reasons if {
	d := decide(request({"action": "explain", "model": {"explanations": false}}))
	denied(d, "explanations leak model information")
	denied(d, "was registered without explanation rights")
	count(d.reasons) == 2
}

# --- batch limits ----------------------------------------------------------------

test_deny_batch_over_role_max if {
	denied(decide(request({"request": {"batch_size": 65}})), "batch size 65 exceeds the maximum 64 for roles [\"predictor\"] at risk tier low")
}

test_deny_batch_over_role_max_when_the_model_allows_as_many if {
	d := decide(request({"model": {"max_batch": 64}, "request": {"batch_size": 65}}))
	denied(d, "batch size 65 exceeds the maximum 64 for roles [\"predictor\"] at risk tier low")
	count(d.reasons) == 1
}

test_allow_model_batch_limit_lowers_the_obligation if {
	d := decide(request({"model": {"max_batch": 16}, "request": {"batch_size": 16}}))
	d.allow == true
	d.obligations.max_batch_size == 16
}

test_allow_model_batch_limit_never_raises_the_role_limit if {
	d := decide(request({"model": {"max_batch": 1024}}))
	d.allow == true
	d.obligations.max_batch_size == 64
}

test_deny_batch_over_model_max if {
	inp := as_roles(["model-owner"], {"model": {"name": "breast-cancer", "max_batch": 16}, "request": {"batch_size": 40}})
	d := decide(inp)
	d.allow == false
	d.reasons == ["batch size 40 exceeds the maximum 16 for model \"breast-cancer\""]
}

test_deny_batch_over_model_max_at_a_higher_tier if {
	# model-owner allows 64 at medium risk; the model's own 8 binds.
	inp := as_roles(["model-owner"], {"model": {"risk_tier": "medium", "max_batch": 8}, "request": {"batch_size": 9}})
	policy.max_batch_size == 8 with input as inp
	denied(decide(inp), "batch size 9 exceeds the maximum 8 for model \"digits\"")
}

test_deny_model_batch_limit_without_granting_role_is_zero if {
	policy.max_batch_size == 0 with input as as_roles(["viewer"], {"model": {"max_batch": 16}})
}

test_deny_batch_over_medium_tier_max if {
	denied(decide(request({"model": {"risk_tier": "medium"}, "request": {"batch_size": 33}})), "exceeds the maximum 32")
}

# An empty batch is denied for a batch action and allowed for any other action.
empty_batch_decided(action) if {
	action in policy.batch_actions
	denied(decide(as_roles(["admin"], {"action": action, "request": {"batch_size": 0}})), "must be at least 1")
}

empty_batch_decided(action) if {
	not action in policy.batch_actions
	decide(as_roles(["admin"], {"action": action, "request": {"batch_size": 0}})).allow == true
}

test_allow_only_batch_actions_need_a_batch if {
	every action in policy.actions {
		empty_batch_decided(action)
	}
}

test_deny_empty_batch_for_predict if {
	denied(decide(request({"request": {"batch_size": 0}})), "request.batch_size must be at least 1 for predict")
}

# --- decision shape -----------------------------------------------------------------

test_deny_gives_restrictive_obligations if {
	d := decide(request({"subject": {"tenant": "acme"}}))
	d.obligations == {"max_batch_size": 0, "explanations_allowed": false, "flagged_input": "reject", "rate_limit_per_minute": 0}
}

test_deny_lists_every_reason if {
	d := decide(request({"subject": {"tenant": "acme"}, "monitor": {"flood": true}, "request": {"batch_size": 1000}}))
	count(d.reasons) == 3
}

test_allow_default_is_deny if {
	not policy.allow with input as {}
}

test_deny_without_any_loaded_data if {
	d := policy.decision with input as base with data.data as {}
	denied(d, "role data is not loaded")
}

test_deny_no_granting_role_gets_zero_batch_but_keeps_its_rate_limit if {
	policy.max_batch_size == 0 with input as as_roles(["viewer"], {})
	policy.rate_limit_per_minute == 60 with input as as_roles(["viewer"], {})
}

test_deny_no_known_role_gets_zero_rate_limit if {
	policy.rate_limit_per_minute == 0 with input as as_roles(["superuser"], {})
}

test_allow_rate_limit_is_the_subjects_whatever_the_action if {
	# One window counts the subject's requests of every action, so one limit applies.
	d := decide(as_roles(["predictor", "analyst"], {"action": "explain"}))
	d.allow == true
	d.obligations.rate_limit_per_minute == 120
}

test_allow_rate_limit_from_the_roles_alone if {
	# What the service asks before admitting a request: only input.subject.roles.
	policy.rate_limit_per_minute == 60 with input as {"subject": {"roles": ["viewer", "superuser"]}}
	policy.rate_limit_per_minute == 300 with input as {"subject": {"roles": ["viewer", "model-owner"]}}
}

test_allow_rate_exactly_at_the_limit if {
	decide(request({"monitor": {"rate_per_minute": 120}})).allow == true
}

test_deny_rate_just_over_the_limit if {
	denied(decide(request({"monitor": {"rate_per_minute": 120.5}})), "request rate 120.5 per minute exceeds the limit of 120")
}

# Inputs covering every condition of allow, to check allow against the reasons.
invariant_inputs := [
	base,
	{},
	as_roles(["viewer"], {"action": "metadata", "request": {"batch_size": 0}}),
	as_roles(["viewer"], {}),
	as_roles(["analyst"], {"action": "explain"}),
	as_roles(["admin"], {"action": "admin", "request": {"batch_size": 0}}),
	as_roles(["model-owner"], {"action": "admin"}),
	as_roles(["model-owner"], {"model": {"risk_tier": "high"}}),
	as_roles(["model-owner"], {"model": {"risk_tier": "high"}, "monitor": {"flagged_input": true}}),
	as_roles(["superuser"], {}),
	request({"action": "explain"}),
	request({"subject": {"scopes": ["metadata"]}}),
	request({"subject": {"tenant": "acme"}}),
	request({"model": {"risk_tier": "high"}}),
	request({"model": {"max_batch": 16}, "request": {"batch_size": 17}}),
	request({"model": {"max_batch": 16}, "request": {"batch_size": 16}}),
	request({"model": {"max_batch": 64}, "request": {"batch_size": 65}}),
	request({"model": {"max_batch": "16"}}),
	as_roles(["analyst"], {"action": "explain", "model": {"explanations": false}}),
	as_roles(["analyst"], {"model": {"explanations": false}}),
	as_roles(["analyst"], {"action": "explain", "model": {"explanations": "yes"}}),
	request({"monitor": {"flood": true}}),
	request({"monitor": {"extraction_flagged": true}}),
	request({"monitor": {"flagged_input": true}}),
	request({"monitor": {"rate_per_minute": 500}}),
	request({"request": {"batch_size": 0}}),
	request({"request": {"batch_size": 65}}),
	request({"request": {"batch_size": 64}}),
	request({"request": {"time": "later"}}),
	as_roles(["service"], {"subject": {"sub": "svc-batch"}, "client_cert": certificate(["svc-batch"])}),
	as_roles(["service"], {"subject": {"sub": "svc-batch"}}),
	as_roles(["service"], {"subject": {"sub": "svc-batch"}, "client_cert": certificate(["svc-other"])}),
	as_roles(["service", "predictor"], {"subject": {"sub": "svc-batch"}}),
]

# The policy's allow for inp.
allowed(inp) := result if {
	result := policy.allow with input as inp
}

# Allowed, and no reason applies.
consistent(inp) if {
	allowed := policy.allow with input as inp
	allowed == true
	found := policy.reasons with input as inp
	count(found) == 0
}

# Denied, and some reason says why.
consistent(inp) if {
	allowed := policy.allow with input as inp
	allowed == false
	found := policy.reasons with input as inp
	count(found) > 0
}

test_allow_holds_exactly_when_no_reason_applies if {
	every inp in invariant_inputs {
		consistent(inp)
	}
}

test_deny_invariant_inputs_include_denials_and_allows if {
	results := {allowed(inp) | some inp in invariant_inputs}
	results == {true, false}
}

# --- client certificates (mutual TLS) -------------------------------------------

# The client_cert fact the service sets for a verified certificate naming identities.
certificate(identities) := {
	"subject": "CN=svc-batch,O=acme",
	"issuer": "CN=acme services CA",
	"common_name": "svc-batch",
	"uris": [],
	"dns_names": [],
	"identities": identities,
	"fingerprint": "sha256:00",
}

as_service(overrides) := as_roles(["service"], object.union({"subject": {"sub": "svc-batch"}}, overrides))

test_allow_service_role_with_a_certificate_naming_the_subject if {
	d := decide(as_service({"client_cert": certificate(["spiffe://acme/batch", "svc-batch"])}))
	d.allow == true
	d.obligations.max_batch_size == 128
}

test_deny_service_role_without_a_client_certificate if {
	d := decide(as_service({}))
	denied(d, `role "service" requires a TLS client certificate naming subject "svc-batch"`)
	count(d.reasons) == 1
}

test_deny_service_role_with_a_null_client_certificate if {
	denied(decide(as_service({"client_cert": null})), "requires a TLS client certificate")
}

test_deny_service_role_with_a_certificate_naming_someone_else if {
	d := decide(as_service({"client_cert": certificate(["svc-other"])}))
	denied(d, `client certificate identities: ["svc-other"]`)
}

test_deny_service_role_with_a_malformed_client_certificate if {
	denied(decide(as_service({"client_cert": {"identities": "svc-batch"}})), "requires a TLS client certificate")
}

test_allow_other_roles_need_no_client_certificate if {
	decide(as_roles(["service", "predictor"], {"subject": {"sub": "svc-batch"}})).allow == true
}

test_deny_service_role_may_not_explain_even_with_a_certificate if {
	d := decide(as_service({"action": "explain", "client_cert": certificate(["svc-batch"])}))
	denied(d, "explanations leak model information")
}
