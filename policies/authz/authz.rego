# METADATA
# title: Model API authorization
# description: >-
#   Decides every call to the model API (predict, explain, metadata, admin).
#   RBAC comes from data.data.roles (policies/data/roles.json), ABAC from the
#   subject's tenant and the model's risk tier, and the monitor's abuse signals
#   can deny a call. Query data.ztml.authz.decision for
#   {"allow", "reasons", "obligations"}. Anything missing or ill-typed denies.
# entrypoint: true
package ztml.authz

import data.ztml.lib.inputs as v

# METADATA
# title: Actions
# description: Actions the model API knows.
actions := {"predict", "explain", "metadata", "admin"}

# METADATA
# title: Batch actions
# description: Actions that run the model on a batch of inputs.
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
# Input validation (fail closed): every problem is a reason.
# ---------------------------------------------------------------------------

# METADATA
# title: Input fields
# description: Every field the decision needs, with the check its value must pass.
fields := {
	"subject.sub": "name",
	"subject.roles": "names",
	"subject.tenant": "name",
	"subject.scopes": "names",
	"action": "action",
	"model.name": "name",
	"model.digest": "digest",
	"model.tenant": "name",
	"model.risk_tier": "risk_tier",
	"request.batch_size": "count",
	"request.client_address": "name",
	"request.time": "timestamp",
	"monitor.rate_per_minute": "rate",
	"monitor.extraction_suspicion": "probability",
	"monitor.extraction_flagged": "flag",
	"monitor.flood": "flag",
	"monitor.drift": "flag",
	"monitor.flagged_input": "flag",
}

# METADATA
# title: Expected values
# description: What each check expects, for the denial reason.
expected := {
	"name": "a non-empty string",
	"names": "an array of non-empty strings",
	"action": sprintf("one of %v", [sort(actions)]),
	"digest": "sha256:<64 lowercase hex>",
	"risk_tier": "one of [\"high\", \"low\", \"medium\"]",
	"count": "a non-negative integer",
	"timestamp": "an RFC 3339 timestamp",
	"rate": "a non-negative number",
	"probability": "a number in [0, 1]",
	"flag": "a boolean",
}

# METADATA
# title: Input document
# description: The input when it is an object; an empty object otherwise.
default input_object := {}

# METADATA
# title: Input document (object)
# description: The input itself when it is an object.
input_object := input if is_object(input)

# METADATA
# title: Field value
# description: The value at a dotted field path, null when missing.
value(path) := object.get(input_object, split(path, "."), null)

# METADATA
# title: Check a name
# description: A non-empty string.
check("name", x) if v.non_empty_string(x)

# METADATA
# title: Check names
# description: An array of non-empty strings.
check("names", x) if v.string_array(x)

# METADATA
# title: Check an action
# description: One of the known actions.
check("action", x) if x in actions

# METADATA
# title: Check a digest
# description: sha256:<64 lowercase hex>.
check("digest", x) if v.digest(x)

# METADATA
# title: Check a risk tier
# description: low, medium or high.
check("risk_tier", x) if tier_rank[x]

# METADATA
# title: Check a count
# description: A non-negative integer.
check("count", x) if v.non_negative_int(x)

# METADATA
# title: Check a timestamp
# description: An RFC 3339 time.
check("timestamp", x) if v.timestamp(x)

# METADATA
# title: Check a rate
# description: A non-negative number.
check("rate", x) if v.non_negative_number(x)

# METADATA
# title: Check a probability
# description: A number in [0, 1].
check("probability", x) if v.probability(x)

# METADATA
# title: Check a flag
# description: A boolean.
check("flag", x) if is_boolean(x)

# METADATA
# title: Well-formed fields
# description: The fields whose value passes its check.
well_formed contains path if {
	not valid
	some path, kind in fields
	check(kind, value(path))
}

# METADATA
# title: Invalid fields
# description: >-
#   A reason for every field that is missing or ill-typed (computed only when the
#   input is not valid).
invalid contains v.invalid_field(path, expected[kind]) if {
	not valid
	some path, kind in fields
	not path in well_formed
}

# METADATA
# title: Input not an object
# description: The input document itself must be an object.
invalid contains "input must be a JSON object" if not is_object(input)

# METADATA
# title: Valid input
# description: >-
#   True only on positive evidence that every field in `fields` passes its check
#   (direct built-in tests, so the common allowed path stays fast). The
#   table-driven `invalid` names the failing fields; a test keeps the two in step.
valid if {
	is_string(input.subject.sub)
	input.subject.sub != ""
	is_array(input.subject.roles)
	every role in input.subject.roles {
		is_string(role)
		role != ""
	}
	is_string(input.subject.tenant)
	input.subject.tenant != ""
	is_array(input.subject.scopes)
	every scope in input.subject.scopes {
		is_string(scope)
		scope != ""
	}
	actions[input.action]
	is_string(input.model.name)
	input.model.name != ""
	is_string(input.model.digest)
	regex.match(`^sha256:[0-9a-f]{64}$`, input.model.digest)
	is_string(input.model.tenant)
	input.model.tenant != ""
	tier_rank[input.model.risk_tier]
	is_number(input.request.batch_size)
	input.request.batch_size >= 0
	floor(input.request.batch_size) == input.request.batch_size
	is_string(input.request.client_address)
	input.request.client_address != ""
	is_string(input.request.time)
	time.parse_rfc3339_ns(input.request.time)
	is_number(input.monitor.rate_per_minute)
	input.monitor.rate_per_minute >= 0
	is_number(input.monitor.extraction_suspicion)
	input.monitor.extraction_suspicion >= 0
	input.monitor.extraction_suspicion <= 1
	is_boolean(input.monitor.extraction_flagged)
	is_boolean(input.monitor.flood)
	is_boolean(input.monitor.drift)
	is_boolean(input.monitor.flagged_input)
}

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
# description: The subject's known roles that permit the requested action.
granting_roles contains role if {
	some role in known_roles
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
# title: Registered risk rank
# description: The rank of the tier the model registry records; -1 for an unregistered model.
default registered_rank := -1

# METADATA
# title: Registered risk rank (known model)
# description: The registry's tier rank for "<tenant>/<name>".
registered_rank := tier_rank[data.data.models[concat("/", [input.model.tenant, input.model.name])].risk_tier]

# METADATA
# title: Effective risk tier
# description: >-
#   The most sensitive of the declared and registered tiers; "high" when the
#   declared tier is not valid, so a bad tier never relaxes a limit.
default risk_tier := "high"

# METADATA
# title: Effective risk tier (declared)
# description: The declared tier when the registry does not record a higher one.
risk_tier := input.model.risk_tier if tier_rank[input.model.risk_tier] >= registered_rank

# METADATA
# title: Effective risk tier (registered)
# description: The registered tier when it is higher than the valid declared tier.
risk_tier := tier if {
	tier_rank[input.model.risk_tier] < registered_rank
	some tier, rank in tier_rank
	rank == registered_rank
}

# ---------------------------------------------------------------------------
# Obligations the service must enforce on an allowed call.
# ---------------------------------------------------------------------------

# METADATA
# title: Maximum batch size
# description: The largest batch any granting role allows at the effective risk tier; 0 without one.
default max_batch_size := 0

# METADATA
# title: Maximum batch size (computed)
# description: Maximum over the granting roles' limits for the risk tier.
max_batch_size := max(limits) if {
	limits := {data.data.roles[role].max_batch_size[risk_tier] | some role in granting_roles}
	count(limits) > 0
}

# METADATA
# title: Explanations allowed
# description: >-
#   Explanations leak model information: only roles that may explain (and, for a
#   high-risk model, may use high-risk models) get them.
default explanations_allowed := false

# METADATA
# title: Explanations allowed (computed)
# description: True when a known role may explain at the model's risk tier.
explanations_allowed if {
	some role in known_roles
	"explain" in data.data.roles[role].actions
	tier_permits(role)
}

# METADATA
# title: Role permits risk tier
# description: True when role may use a model of the effective risk tier.
tier_permits(_) if risk_tier != "high"

# METADATA
# title: Role permits high risk tier
# description: True when role may use high-risk models.
tier_permits(role) if data.data.roles[role].high_risk_models == true

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
# description: The highest rate limit of the granting roles; 0 without one.
default rate_limit_per_minute := 0

# METADATA
# title: Rate limit per minute (computed)
# description: Maximum over the granting roles' rate limits.
rate_limit_per_minute := max(limits) if {
	limits := {data.data.roles[role].rate_limit_per_minute | some role in granting_roles}
	count(limits) > 0
}

# ---------------------------------------------------------------------------
# Reasons: every denial explains itself.
# ---------------------------------------------------------------------------

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
	valid
	count(known_roles) == 0
}

# METADATA
# title: Scope missing
# description: The token's scopes must include the requested action.
reasons contains sprintf("token scopes %v do not include action %q", [input.subject.scopes, input.action]) if {
	valid
	not input.action in input.subject.scopes
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
# title: Action not granted
# description: Some role of the subject must permit the action.
reasons contains sprintf("roles %v may not perform action %q", [sort(known_roles), input.action]) if {
	valid
	count(known_roles) > 0
	count(granting_roles) == 0
	not input.action in {"admin", "explain"}
}

# METADATA
# title: Cross-tenant access
# description: The subject's tenant must equal the model's tenant, for every role.
reasons contains sprintf("subject tenant %q may not access model %q of tenant %q", [input.subject.tenant, input.model.name, input.model.tenant]) if {
	valid
	input.subject.tenant != input.model.tenant
}

# METADATA
# title: High-risk model
# description: High-risk models need a role allowed to use them (model-owner or admin).
reasons contains sprintf("model %q is high risk and requires one of the roles %v", [input.model.name, high_risk_roles]) if {
	valid
	risk_tier == "high"
	not high_risk_capable
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
	valid
	input.action in batch_actions
	input.request.batch_size < 1
}

# METADATA
# title: Batch too large
# description: The batch may not exceed the granting roles' maximum at the risk tier.
reasons contains msg if {
	valid
	input.action in batch_actions
	count(granting_roles) > 0
	input.request.batch_size > max_batch_size
	msg := sprintf("batch size %d exceeds the maximum %d for roles %v at risk tier %s", [input.request.batch_size, max_batch_size, sort(granting_roles), risk_tier])
}

# METADATA
# title: Rate limit exceeded
# description: The subject's request rate may not exceed the roles' rate limit.
reasons contains msg if {
	valid
	count(granting_roles) > 0
	input.monitor.rate_per_minute > rate_limit_per_minute
	msg := sprintf("request rate %v per minute exceeds the limit of %d for roles %v", [input.monitor.rate_per_minute, rate_limit_per_minute, sort(granting_roles)])
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
#   there is no reason.
allow if {
	valid
	count(granting_roles) > 0
	input.action in input.subject.scopes
	input.subject.tenant == input.model.tenant
	risk_tier_permitted
	input.monitor.flood == false
	input.monitor.extraction_flagged == false
	batch_permitted
	input.monitor.rate_per_minute <= rate_limit_per_minute
	flagged_input_permitted
}

# METADATA
# title: Risk tier permitted
# description: Below high risk any granting role will do.
risk_tier_permitted if risk_tier != "high"

# METADATA
# title: Risk tier permitted (high)
# description: A high-risk model needs a granting role allowed to use high-risk models.
risk_tier_permitted if high_risk_capable

# METADATA
# title: Batch permitted
# description: Actions that do not run the model have no batch to check.
batch_permitted if not input.action in batch_actions

# METADATA
# title: Batch permitted (predict, explain)
# description: The batch holds 1 to max_batch_size instances.
batch_permitted if {
	input.action in batch_actions
	input.request.batch_size >= 1
	input.request.batch_size <= max_batch_size
}

# METADATA
# title: Flagged input permitted
# description: An input the monitor did not flag is always served.
flagged_input_permitted if input.monitor.flagged_input == false

# METADATA
# title: Flagged input permitted (flagged)
# description: A flagged input is served (and flagged) only when the obligation says so.
flagged_input_permitted if {
	input.monitor.flagged_input == true
	flagged_input == "serve_and_flag"
}

# METADATA
# title: Reason list
# description: An allowed call has no reasons.
reason_list := [] if allow

# METADATA
# title: Reason list (denied)
# description: >-
#   The sorted reasons of a denial. There is always at least one: without valid
#   input every bad field is named, and with valid input but no granting role one
#   of the role reasons applies.
reason_list := sort(reasons) if not allow

# METADATA
# title: Obligations
# description: What the service must enforce; the most restrictive values on a denial.
obligations := {
	"max_batch_size": max_batch_size,
	"explanations_allowed": explanations_allowed,
	"flagged_input": flagged_input,
	"rate_limit_per_minute": rate_limit_per_minute,
} if allow

# METADATA
# title: Obligations (denied)
# description: A denied call gets nothing.
obligations := {
	"max_batch_size": 0,
	"explanations_allowed": false,
	"flagged_input": "reject",
	"rate_limit_per_minute": 0,
} if not allow

# METADATA
# title: Decision
# description: The answer the service asks for.
decision := {
	"allow": allow,
	"reasons": reason_list,
	"obligations": obligations,
}
