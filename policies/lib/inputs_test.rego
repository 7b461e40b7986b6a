package ztml.lib.inputs_test

import data.ztml.lib.inputs as lib

test_allow_non_empty_string if lib.non_empty_string("alice")

test_deny_non_empty_string_rejects_empty if not lib.non_empty_string("")

test_deny_non_empty_string_rejects_number if not lib.non_empty_string(3)

test_allow_string_array if lib.string_array(["a", "b"])

test_allow_string_array_empty if lib.string_array([])

test_deny_string_array_with_number if not lib.string_array(["a", 1])

test_deny_string_array_not_array if not lib.string_array("a")

test_allow_non_negative_int if lib.non_negative_int(4)

test_deny_non_negative_int_fraction if not lib.non_negative_int(1.5)

test_deny_non_negative_int_negative if not lib.non_negative_int(-1)

test_deny_non_negative_int_string if not lib.non_negative_int("4")

test_allow_positive_int if lib.positive_int(1)

test_deny_positive_int_zero if not lib.positive_int(0)

test_deny_positive_int_fraction if not lib.positive_int(1.5)

test_deny_positive_int_string if not lib.positive_int("16")

test_allow_non_negative_number if lib.non_negative_number(0.5)

test_deny_non_negative_number_negative if not lib.non_negative_number(-0.5)

test_allow_probability if lib.probability(1)

test_deny_probability_above_one if not lib.probability(1.01)

test_allow_digest if lib.digest(good_digest)

test_deny_digest_uppercase if not lib.digest(upper(good_digest))

test_deny_digest_short if not lib.digest("sha256:abc")

test_deny_digest_not_string if not lib.digest(42)

test_allow_timestamp if lib.timestamp("2026-11-22T10:00:00Z")

test_deny_timestamp_garbage if not lib.timestamp("yesterday")

test_deny_timestamp_not_string if not lib.timestamp(1700000000)

test_allow_invalid_field_message if {
	lib.invalid_field("subject.sub", "a non-empty string") == "input field subject.sub is missing or invalid: expected a non-empty string"
}

good_digest := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
