package ztml.provenance_test

import data.ztml.provenance as prov

# Requirements per input modality. The helpers (record, register, approve, gate, decide,
# denied) are those of provenance_test.rego, in this package.

contract(modality) := {"digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333", "document": {"input": {"modality": modality}}}

registered_as(contract_doc, results) := object.union(register(0, trainer, results), {"payload": {"contract": contract_doc}})

at(epsilon, accuracy) := object.union(robust(accuracy), {"epsilon": epsilon})

model(contract_doc, results) := gate([registered_as(contract_doc, results), approve(1, approver)])

test_allow_modality_requirements_come_from_data if {
	prov.required("image") == {"min_robust_accuracy": 0.8, "epsilon": 0.1, "attack": "worst-case", "min_steps": 100, "min_restarts": 10} with input as gate(good_records)
	prov.required("tabular") == {"min_robust_accuracy": 0.8, "epsilon": 0.05, "attack": "worst-case", "min_steps": 100, "min_restarts": 10} with input as gate(good_records)
}

test_allow_tabular_model_at_its_epsilon if {
	decide(model(contract("tabular"), [at(0.05, 0.851), at(0.1, 0.728)])) == {"allow": true, "reasons": []}
}

test_allow_tabular_model_at_a_larger_epsilon if {
	decide(model(contract("tabular"), [at(0.1, 0.81)])).allow == true
}

test_deny_tabular_model_below_threshold_at_its_epsilon if {
	d := decide(model(contract("tabular"), [at(0.05, 0.73)]))
	denied(d, "no trusted evaluation reaches robust accuracy >= 0.8 under worst-case at epsilon >= 0.05 with >= 100 steps and >= 10 restarts, as tabular models require (found: [\"worst-case eps=0.05 steps=100 restarts=10 acc=0.73\"])")
	count(d.reasons) == 1
}

test_deny_tabular_model_below_its_epsilon if {
	denied(decide(model(contract("tabular"), [at(0.03, 0.95)])), "at epsilon >= 0.05 with >= 100 steps and >= 10 restarts, as tabular models require")
}

test_allow_image_model_at_its_epsilon if {
	decide(model(contract("image"), [at(0.1, 0.864)])).allow == true
}

test_deny_image_model_at_the_tabular_epsilon if {
	d := decide(model(contract("image"), [at(0.05, 0.95)]))
	denied(d, "no trusted evaluation reaches robust accuracy >= 0.8 under worst-case at epsilon >= 0.1 with >= 100 steps and >= 10 restarts, as image models require")
	count(d.reasons) == 1
}

test_deny_legacy_registration_without_contract_is_held_to_image if {
	d := decide(gate([register(0, trainer, [at(0.05, 0.95)]), approve(1, approver)]))
	denied(d, "at epsilon >= 0.1 with >= 100 steps and >= 10 restarts, as image models require")
}

test_deny_contract_without_modality if {
	d := decide(model({"digest": "sha256:33", "document": {"input": {}}}, [at(0.1, 0.95)]))
	denied(d, "register record seq 0 has a contract without an input modality")
	d.allow == false
}

test_deny_registrations_with_different_modalities if {
	image := registered_as(contract("image"), [at(0.1, 0.95)])
	tabular := object.union(registered_as(contract("tabular"), [at(0.05, 0.95)]), {"seq": 1})
	d := decide(gate([image, tabular, approve(2, approver)]))
	denied(d, "declare different input modalities [\"image\", \"tabular\"]")
}

test_deny_too_few_steps_names_the_modality if {
	weak := object.union(at(0.05, 0.95), {"steps": 20})
	denied(decide(model(contract("tabular"), [weak])), "evaluation used 20 PGD steps, the gate requires >= 100 for tabular models")
}

test_allow_input_overrides_one_modality if {
	inp := object.union(model(contract("tabular"), [at(0.05, 0.73)]), {"requirements": {"by_modality": {"tabular": {"min_robust_accuracy": 0.7}}}})
	decide(inp).allow == true
}

test_deny_modality_without_override_is_held_to_the_defaults if {
	required := {"min_robust_accuracy": 0.8, "epsilon": 0.1, "attack": "worst-case", "min_steps": 100, "min_restarts": 10}
	inp := object.union(model(contract("tabular"), [at(0.05, 0.95)]), {"requirements": required})
	d := prov.decision with input as inp with data.data as {}
	denied(d, "at epsilon >= 0.1 with >= 100 steps and >= 10 restarts, as tabular models require")
}

test_deny_override_of_an_unknown_field if {
	inp := object.union(gate(good_records), {"requirements": {"by_modality": {"tabular": {"epsilonn": 0.01}}}})
	denied(decide(inp), "input field requirements is missing or invalid")
}

test_deny_override_of_a_bad_value if {
	inp := object.union(gate(good_records), {"requirements": {"by_modality": {"tabular": {"epsilon": "small"}}}})
	denied(decide(inp), "input field requirements is missing or invalid")
}

test_deny_by_modality_not_an_object if {
	inp := object.union(gate(good_records), {"requirements": {"by_modality": ["tabular"]}})
	denied(decide(inp), "input field requirements is missing or invalid")
}

test_deny_override_not_an_object if {
	inp := object.union(gate(good_records), {"requirements": {"by_modality": {"tabular": 0.05}}})
	denied(decide(inp), "input field requirements is missing or invalid")
}
