# Input validation of the model API authorization (package ztml.authz, documented in
# authz.rego). Fail closed: `valid` holds only when every field the decision needs is
# present and well-typed, and `invalid` names every field that is not, as a reason.
# The model facts (input.model) are those of the model's approved registration in the
# provenance ledger: name, digest, tenant, risk tier, batch limit, explanation rights.
package ztml.authz

import data.ztml.lib.inputs as v

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
	"model.max_batch": "limit",
	"model.explanations": "flag",
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
	"limit": "an integer >= 1",
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
# title: Check a limit
# description: A positive integer.
check("limit", x) if v.positive_int(x)

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
invalid contains reason if {
	not valid
	some path, kind in fields
	not path in well_formed
	reason := v.invalid_field(path, expected[kind])
}

# METADATA
# title: Input not an object
# description: The input document itself must be an object.
invalid contains "input must be a JSON object" if not is_object(input)

# METADATA
# title: Valid input
# description: >-
#   True only on positive evidence that every field in `fields` passes its check.
#   The checks are grouped so each expression tests several fields (array.concat
#   is undefined unless roles and scopes are arrays, concat unless every item is a
#   string, floor and abs unless the value is a number), which keeps the common
#   allowed path fast. The table-driven `invalid`
#   names the failing fields; a test keeps the two in step.
valid if {
	texts := array.concat(
		[
			input.subject.sub,
			input.subject.tenant,
			input.model.name,
			input.model.tenant,
			input.request.client_address,
		],
		array.concat(input.subject.roles, input.subject.scopes),
	)
	is_string(concat("", texts))
	not "" in texts
	input.action in {"predict", "explain", "metadata", "admin"}
	input.model.risk_tier in {"low", "medium", "high"}
	regex.match(`^sha256:[0-9a-f]{64}$`, input.model.digest)
	floor(input.request.batch_size) == input.request.batch_size
	input.request.batch_size >= 0
	floor(input.model.max_batch) == input.model.max_batch
	input.model.max_batch >= 1
	time.parse_rfc3339_ns(input.request.time)
	abs(input.monitor.rate_per_minute) == input.monitor.rate_per_minute
	abs(input.monitor.extraction_suspicion) == input.monitor.extraction_suspicion
	input.monitor.extraction_suspicion <= 1
	object.subset({true, false}, {
		input.model.explanations,
		input.monitor.extraction_flagged,
		input.monitor.flood,
		input.monitor.drift,
		input.monitor.flagged_input,
	})
}
