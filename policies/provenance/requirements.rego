# The deploy gate's requirements, per input modality: default requirements, overridden
# for a modality by its entry in by_modality. The thresholds live in
# policies/data/provenance.json; a caller's input.requirements overrides them field by
# field (object.union, so by_modality entries merge too).
package ztml.provenance

import data.ztml.lib.inputs as v

# METADATA
# title: Requirements from data
# description: >-
#   Empty when policies/data/provenance.json (the one source of the thresholds) is not
#   loaded; the input must then give every requirement or the decision denies.
default data_requirements := {}

# METADATA
# title: Requirements from data (loaded)
# description: The requirements of policies/data/provenance.json.
data_requirements := data.data.provenance.requirements

# METADATA
# title: Requirements from input
# description: Empty when the input gives none.
default input_requirements := {}

# METADATA
# title: Requirements from input (given)
# description: input.requirements when it is an object.
input_requirements := input.requirements if is_object(input.requirements)

# METADATA
# title: Requirements
# description: The data's requirements, each overridden by the input's.
requirements := object.union(data_requirements, input_requirements)

# METADATA
# title: Default requirements
# description: The requirements of a modality without an override of its own.
default_requirements := object.remove(requirements, {"by_modality"})

# METADATA
# title: No per-modality overrides
# description: Every modality gets the default requirements when by_modality is absent.
default overrides := {}

# METADATA
# title: Per-modality overrides
# description: requirements.by_modality, modality name to the fields it overrides.
overrides := requirements.by_modality

# METADATA
# title: Requirement fields
# description: The fields a per-modality override may set.
requirement_fields := {"min_robust_accuracy", "epsilon", "attack", "min_steps", "min_restarts", "norm"}

# METADATA
# title: Requirements of a modality
# description: The default requirements, overridden by the modality's by_modality entry.
required(modality) := object.union(default_requirements, object.get(overrides, modality, {}))

# METADATA
# title: Well-typed requirements
# description: Every requirement of one modality has the right type.
well_typed(candidate) if {
	v.probability(candidate.min_robust_accuracy)
	v.non_negative_number(candidate.epsilon)
	v.non_empty_string(candidate.attack)
	v.non_negative_int(candidate.min_steps)
	v.non_negative_int(candidate.min_restarts)
}

# METADATA
# title: Valid requirements
# description: >-
#   The defaults are well typed, and so is every modality's after its override, which
#   sets only known fields (a misspelt field must not silently leave the default).
requirements_ok if {
	well_typed(default_requirements)
	is_object(overrides)
	every modality, override in overrides {
		is_string(modality)
		is_object(override)
		count(object.keys(override) - requirement_fields) == 0
		well_typed(required(modality))
	}
}

# METADATA
# title: Modality of a legacy registration
# description: >-
#   A register record without a contract (the built-in digits model's, registered before
#   contracts) is of an image model.
modality(registration) := "image" if object.get(registration, ["payload", "contract"], null) == null

# METADATA
# title: Modality of a registration
# description: The input modality the registered contract declares.
modality(registration) := m if {
	m := registration.payload.contract.document.input.modality
	is_string(m)
}
