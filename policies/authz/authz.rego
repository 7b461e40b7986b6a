# METADATA
# title: Model API authorization
# description: >-
#   Decides every call to the model API (predict, explain, metadata, admin).
#   RBAC comes from data.data.roles (policies/data/roles.json), ABAC from the
#   subject's tenant and the model's facts (input.model: tenant, risk tier, batch
#   limit, explanation rights, which the service takes from the model's approved
#   registration in the provenance ledger), and the monitor's abuse signals can
#   deny a call. Query data.ztml.authz.decision for
#   {"allow", "reasons", "obligations"}. Anything missing or ill-typed denies.
# entrypoint: true
package ztml.authz

# METADATA
# title: Actions
# description: Actions the model API knows.
actions := {"predict", "explain", "metadata", "admin"}

# METADATA
# title: Batch actions
# description: >-
#   Actions that run the model on a batch of inputs. The decision path writes this
#   set as a literal (a rule reference costs more per decision); a test keeps them
#   in step.
batch_actions := {"predict", "explain"}

# METADATA
# title: Risk tier ranks
# description: Risk tiers ordered from least to most sensitive.
tier_rank := {"low": 0, "medium": 1, "high": 2}

# METADATA
# title: Role definitions
# description: Without role data no role is known and nothing is granted.
default roles := {}

# METADATA
# title: Role definitions (loaded)
# description: >-
#   Role name to actions, limits and high-risk permission, from
#   policies/data/roles.json. Hot paths read data.data.roles[role] directly so a
#   decision reads only the roles it needs from the store.
roles := data.data.roles

# ---------------------------------------------------------------------------
# RBAC and risk tier.
# ---------------------------------------------------------------------------

# METADATA
# title: Known roles
# description: The subject's roles that the role data defines.
known_roles contains role if {
	some role in input.subject.roles
	data.data.roles[role]
}

# METADATA
# title: Granting roles
# description: The subject's known roles that permit the requested action and need no client certificate.
granting_roles contains role if {
	some role in input.subject.roles
	def := data.data.roles[role]
	input.action in def.actions
	not def.requires_client_certificate
}

# METADATA
# title: Granting roles (client certificate)
# description: >-
#   A role with requires_client_certificate grants only when the caller's
#   verified TLS client certificate (input.client_cert, set by the service from the
#   handshake) names the token's subject among its identities (SAN URIs, SAN DNS
#   names, CN): a stolen token is useless without the caller's private key.
granting_roles contains role if {
	input.subject.sub in input.client_cert.identities
	some role in input.subject.roles
	data.data.roles[role].requires_client_certificate == true
	input.action in data.data.roles[role].actions
}

# METADATA
# title: Certificate-bound roles
# description: The subject's roles that would permit the action with a client certificate.
certificate_roles contains role if {
	some role in input.subject.roles
	data.data.roles[role].requires_client_certificate == true
	input.action in data.data.roles[role].actions
}

# METADATA
# title: High-risk capable
# description: True when a granting role may use high-risk models.
high_risk_capable if {
	some role in granting_roles
	data.data.roles[role].high_risk_models == true
}

# METADATA
# title: Effective risk tier
# description: >-
#   The tier the model was registered with (input.model.risk_tier, from the
#   ledger's approved register record); "high" when it is missing or not a known
#   tier, so bad input never relaxes a limit.
default risk_tier := "high"

# METADATA
# title: Effective risk tier (registered)
# description: The model's registered tier when it is low, medium or high.
risk_tier := input.model.risk_tier if input.model.risk_tier in {"low", "medium", "high"}

# ---------------------------------------------------------------------------
# Obligations the service must enforce on an allowed call.
# ---------------------------------------------------------------------------

# METADATA
# title: Role maximum batch size
# description: The largest batch any granting role allows at the effective risk tier; 0 without one.
default role_max_batch_size := 0

# METADATA
# title: Role maximum batch size (computed)
# description: Maximum over the granting roles' limits for the risk tier.
role_max_batch_size := max([data.data.roles[role].max_batch_size[risk_tier] | some role in granting_roles])

# METADATA
# title: Maximum batch size
# description: >-
#   The effective batch limit: the smaller of the granting roles' maximum at the
#   risk tier and the model's own limit (input.model.max_batch, registered in the
#   ledger); 0 without a granting role or without a numeric model limit.
default max_batch_size := 0

# METADATA
# title: Maximum batch size (computed)
# description: Minimum of the roles' maximum and the model's registered maximum.
max_batch_size := min([role_max_batch_size, input.model.max_batch]) if is_number(input.model.max_batch)

# METADATA
# title: Explanations allowed
# description: >-
#   Explanations leak model information: only roles that may explain (and, for a
#   high-risk model, may use high-risk models) get them.
default explanations_allowed := false

# METADATA
# title: Explanations allowed (computed)
# description: >-
#   True when the model was registered with explanation rights and a known role
#   may explain at the model's risk tier.
explanations_allowed if {
	input.model.explanations == true
	some role in input.subject.roles
	def := data.data.roles[role]
	"explain" in def.actions
	tier_permits(def)
}

# METADATA
# title: Role permits risk tier
# description: True when a role (its definition) may use a model of the effective risk tier.
tier_permits(_) if risk_tier != "high"

# METADATA
# title: Role permits high risk tier
# description: True when a role (its definition) may use high-risk models.
tier_permits(def) if def.high_risk_models == true

# METADATA
# title: Flagged input handling
# description: >-
#   "reject" for high-risk models or when extraction is flagged (and whenever the
#   monitor data is unusable); "serve_and_flag" otherwise.
default flagged_input := "reject"

# METADATA
# title: Flagged input handling (serve)
# description: Serve and flag a flagged input only below high risk and without extraction suspicion.
flagged_input := "serve_and_flag" if {
	risk_tier != "high"
	input.monitor.extraction_flagged == false
}

# METADATA
# title: Rate limit per minute
# description: >-
#   The subject's limit, whatever the action: the service counts a subject's
#   requests of every action in one window and refuses (429) a request that would
#   go over this limit before it asks, querying this rule with only
#   input.subject.roles. 0 without a known role.
default rate_limit_per_minute := 0

# METADATA
# title: Rate limit per minute (computed)
# description: Maximum over the subject's known roles' rate limits.
rate_limit_per_minute := max([data.data.roles[role].rate_limit_per_minute | some role in known_roles])

# ---------------------------------------------------------------------------
# Reasons: every denial explains itself.
# ---------------------------------------------------------------------------
# Each reason tests what sets it apart first and `valid` last. The order does not
# change what a rule means, but a denial evaluates every reason rule, and one that
# does not apply then stops at its first expression: a reference to a rule costs a
# few µs even when its value is cached.

# METADATA
# title: Input reasons
# description: Every invalid input field is a reason.
reasons contains reason if {
	not valid
	some reason in invalid
}

# METADATA
# title: Role data missing
# description: Without role data nothing is granted.
reasons contains "role data is not loaded (data.data.roles from policies/data/roles.json)" if {
	count(known_roles) == 0
	count(roles) == 0
}

# METADATA
# title: No known role
# description: The subject must hold at least one role the role data defines.
reasons contains sprintf("subject %q has no known role (roles: %v)", [input.subject.sub, input.subject.roles]) if {
	count(known_roles) == 0
	valid
}

# METADATA
# title: Scope missing
# description: The token's scopes must include the requested action.
reasons contains sprintf("token scopes %v do not include action %q", [input.subject.scopes, input.action]) if {
	not input.action in input.subject.scopes
	valid
}

# METADATA
# title: Admin only
# description: Admin actions need the admin role.
reasons contains "admin actions require the admin role" if {
	valid
	input.action == "admin"
	not "admin" in known_roles
}

# METADATA
# title: Explanations restricted
# description: Explanations leak model information; only roles allowed to explain get them.
reasons contains sprintf("explanations leak model information and require one of the roles %v", [explain_roles]) if {
	valid
	input.action == "explain"
	count(granting_roles) == 0
}

# METADATA
# title: Explanations not registered
# description: >-
#   A model explains only when its registration in the ledger grants explanation
#   rights (input.model.explanations), whatever the subject's roles.
reasons contains sprintf("model %q was registered without explanation rights", [input.model.name]) if {
	input.action == "explain"
	input.model.explanations == false
	valid
}

# METADATA
# title: Action not granted
# description: Some role of the subject must permit the action.
reasons contains sprintf("roles %v may not perform action %q", [sort(known_roles), input.action]) if {
	count(granting_roles) == 0
	count(known_roles) > 0
	not input.action in {"admin", "explain"}
	count(certificate_roles) == 0
	valid
}

# METADATA
# title: Client certificate missing
# description: >-
#   A role that requires a client certificate grants nothing without a verified one
#   naming the subject.
reasons contains sprintf("role %q requires a TLS client certificate naming subject %q (client certificate identities: %v)", [role, input.subject.sub, object.get(input_object, ["client_cert", "identities"], [])]) if {
	count(granting_roles) == 0
	valid
	some role in certificate_roles
}

# METADATA
# title: Cross-tenant access
# description: The subject's tenant must equal the model's tenant, for every role.
reasons contains sprintf("subject tenant %q may not access model %q of tenant %q", [input.subject.tenant, input.model.name, input.model.tenant]) if {
	input.subject.tenant != input.model.tenant
	valid
}

# METADATA
# title: High-risk model
# description: High-risk models need a role allowed to use them (model-owner or admin).
reasons contains sprintf("model %q is high risk and requires one of the roles %v", [input.model.name, high_risk_roles]) if {
	risk_tier == "high"
	not high_risk_capable
	valid
}

# METADATA
# title: Request flood
# description: The monitor's flood signal denies the call.
reasons contains "request flood detected by the monitor" if {
	input.monitor.flood == true
}

# METADATA
# title: Extraction suspected
# description: The monitor's model extraction flag denies the call.
reasons contains sprintf("model extraction suspected by the monitor (suspicion %v)", [input.monitor.extraction_suspicion]) if {
	input.monitor.extraction_flagged == true
}

# METADATA
# title: Empty batch
# description: predict and explain need at least one instance.
reasons contains sprintf("request.batch_size must be at least 1 for %s", [input.action]) if {
	input.request.batch_size < 1
	input.action in {"predict", "explain"}
	valid
}

# METADATA
# title: Batch too large
# description: >-
#   The batch may not exceed the granting roles' maximum at the risk tier, when that
#   is the binding limit (not above the model's own).
reasons contains msg if {
	input.action in {"predict", "explain"}
	count(granting_roles) > 0
	input.request.batch_size > max_batch_size
	valid
	role_max_batch_size <= input.model.max_batch
	msg := sprintf("batch size %d exceeds the maximum %d for roles %v at risk tier %s", [input.request.batch_size, max_batch_size, sort(granting_roles), risk_tier])
}

# METADATA
# title: Batch too large for the model
# description: >-
#   The batch may not exceed the model's own maximum (input.model.max_batch, from
#   its registration), when that is below the granting roles' maximum.
reasons contains msg if {
	input.action in {"predict", "explain"}
	count(granting_roles) > 0
	input.request.batch_size > max_batch_size
	valid
	input.model.max_batch < role_max_batch_size
	msg := sprintf("batch size %d exceeds the maximum %d for model %q", [input.request.batch_size, max_batch_size, input.model.name])
}

# METADATA
# title: Rate limit exceeded
# description: The subject's request rate may not exceed the roles' rate limit.
reasons contains msg if {
	count(granting_roles) > 0
	input.monitor.rate_per_minute > rate_limit_per_minute
	valid
	msg := sprintf("request rate %v per minute exceeds the limit of %d for roles %v", [input.monitor.rate_per_minute, rate_limit_per_minute, sort(known_roles)])
}

# METADATA
# title: Flagged input rejected
# description: A flagged input is rejected for high-risk models or when extraction is flagged.
reasons contains sprintf("flagged input rejected (model risk tier %s)", [risk_tier]) if {
	input.monitor.flagged_input == true
	flagged_input == "reject"
}

# METADATA
# title: Explaining roles
# description: Roles whose actions include explain.
explain_roles := sort([role | some role, def in roles; "explain" in def.actions])

# METADATA
# title: High-risk roles
# description: Roles that may use high-risk models.
high_risk_roles := sort([role | some role, def in roles; def.high_risk_models == true])

# ---------------------------------------------------------------------------
# Decision.
# ---------------------------------------------------------------------------

# METADATA
# title: Allow
# description: Allowed only with valid input, a granting role and no reason to deny.
default allow := false

# METADATA
# title: Allow (granted)
# description: >-
#   Positive evidence for every condition, tested directly so an allowed call
#   never has to build the reasons. Each condition is the negation of a reason
#   below; the tests check on every test input that allow holds exactly when
#   there is no reason. Cheap input comparisons come first so most denials stop
#   early.
allow if {
	input.monitor.flood == false
	input.monitor.extraction_flagged == false
	input.subject.tenant == input.model.tenant
	input.action in input.subject.scopes
	valid
	count(granting_roles) > 0
	risk_tier_permitted(risk_tier)
	batch_permitted(input.action)
	explanations_permitted(input.action)
	input.monitor.rate_per_minute <= rate_limit_per_minute
	flagged_input_permitted(input.monitor.flagged_input)
}

# METADATA
# title: Risk tier permitted
# description: Below high risk any granting role will do.
risk_tier_permitted(tier) if tier != "high"

# METADATA
# title: Risk tier permitted (high)
# description: A high-risk model needs a granting role allowed to use high-risk models.
risk_tier_permitted("high") if high_risk_capable

# METADATA
# title: Batch permitted
# description: Actions that do not run the model have no batch to check.
batch_permitted("metadata")

# METADATA
# title: Batch permitted (admin)
# description: Admin actions do not run the model.
batch_permitted("admin")

# METADATA
# title: Batch permitted (predict, explain)
# description: The batch holds 1 to max_batch_size instances.
batch_permitted(action) if {
	action in {"predict", "explain"}
	input.request.batch_size >= 1
	input.request.batch_size <= max_batch_size
}

# METADATA
# title: Explanations permitted
# description: Only explain needs the model's explanation rights.
explanations_permitted(action) if action != "explain"

# METADATA
# title: Explanations permitted (explain)
# description: The model was registered with explanation rights.
explanations_permitted("explain") if input.model.explanations == true

# METADATA
# title: Flagged input permitted
# description: An input the monitor did not flag is always served.
flagged_input_permitted(false)

# METADATA
# title: Flagged input permitted (flagged)
# description: A flagged input is served (and flagged) only when the obligation says so.
flagged_input_permitted(true) if flagged_input == "serve_and_flag"

# METADATA
# title: Decision
# description: >-
#   The answer the service asks for: {"allow", "reasons", "obligations"}. An
#   allowed call has no reasons and gets the obligations the service must enforce.
#   A denied call gets its sorted reasons and the most restrictive obligations.
#   There is always at least one reason: without valid input every bad field is
#   named, and with valid input but no granting role one of the role reasons applies.
decision := {
	"allow": true,
	"reasons": [],
	"obligations": {
		"max_batch_size": max_batch_size,
		"explanations_allowed": explanations_allowed,
		"flagged_input": flagged_input,
		"rate_limit_per_minute": rate_limit_per_minute,
	},
} if {
	allow
} else := {
	"allow": false,
	"reasons": sort(reasons),
	"obligations": {
		"max_batch_size": 0,
		"explanations_allowed": false,
		"flagged_input": "reject",
		"rate_limit_per_minute": 0,
	},
}
