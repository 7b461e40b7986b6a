# METADATA
# title: Decision log mask
# description: >-
#   OPA evaluates data.system.log.mask on every decision log event before it is
#   written. Each JSON pointer listed here is erased from the event, so raw model
#   inputs and credentials never reach decision logs; OPA records the erased
#   paths in the event's "erased" field.
package system.log

# METADATA
# title: Raw model inputs
# description: Feature vectors and request bodies are raw model inputs.
mask contains path if {
	some path in raw_input_paths
}

# METADATA
# title: Credentials
# description: Bearer tokens and authorization headers.
mask contains path if {
	some path in credential_paths
}

# METADATA
# title: Raw input pointers
# description: Where callers put raw model inputs in a decision's input.
raw_input_paths := {
	"/input/request/features",
	"/input/request/instances",
	"/input/request/inputs",
	"/input/request/body",
	"/input/instances",
	"/input/features",
	"/input/inputs",
}

# METADATA
# title: Credential pointers
# description: Where callers may put tokens in a decision's input.
credential_paths := {
	"/input/token",
	"/input/headers/authorization",
	"/input/headers/Authorization",
	"/input/subject/token",
	"/input/request/token",
}
