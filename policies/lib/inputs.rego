# METADATA
# title: Input validation helpers
# description: >-
#   Type predicates shared by the ztml policies. Each helper is true only for a
#   well-formed value, so a missing or ill-typed field makes it undefined and the
#   calling policy fails closed.
package ztml.lib.inputs

# METADATA
# title: Non-empty string
# description: True when x is a string with at least one character.
non_empty_string(x) if {
	is_string(x)
	x != ""
}

# METADATA
# title: Array of non-empty strings
# description: True when x is an array whose items are all non-empty strings.
string_array(x) if {
	is_array(x)
	every item in x {
		non_empty_string(item)
	}
}

# METADATA
# title: Non-negative integer
# description: True when x is a whole number greater than or equal to zero.
non_negative_int(x) if {
	is_number(x)
	x >= 0
	floor(x) == x
}

# METADATA
# title: Positive integer
# description: True when x is a whole number greater than or equal to one.
positive_int(x) if {
	non_negative_int(x)
	x >= 1
}

# METADATA
# title: Non-negative number
# description: True when x is a number greater than or equal to zero.
non_negative_number(x) if {
	is_number(x)
	x >= 0
}

# METADATA
# title: Probability
# description: True when x is a number in the closed interval [0, 1].
probability(x) if {
	non_negative_number(x)
	x <= 1
}

# METADATA
# title: SHA-256 digest
# description: True when x is a digest of the form sha256:<64 lowercase hex>.
digest(x) if {
	is_string(x)
	regex.match(`^sha256:[0-9a-f]{64}$`, x)
}

# METADATA
# title: RFC 3339 timestamp
# description: True when x is a string that parses as an RFC 3339 time.
timestamp(x) if {
	is_string(x)
	time.parse_rfc3339_ns(x)
}

# METADATA
# title: Missing or invalid field
# description: >-
#   Builds the denial reason for a field that is missing or has the wrong type;
#   path names the field and expected describes what was expected.
invalid_field(path, expected) := sprintf("input field %s is missing or invalid: expected %s", [path, expected])
