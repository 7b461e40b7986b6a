package ztml.provenance_test

import data.ztml.provenance as prov

digest := "sha256:1111111111111111111111111111111111111111111111111111111111111111"

other_digest := "sha256:2222222222222222222222222222222222222222222222222222222222222222"

trainer := {"identity": "trainer@ztml", "key_id": "ed25519:aaaaaaaaaaaaaaaa"}

approver := {"identity": "approver@ztml", "key_id": "ed25519:bbbbbbbbbbbbbbbb"}

stranger := {"identity": "mallory@evil", "key_id": "ed25519:cccccccccccccccc"}

robust(accuracy) := {"attack": "worst-case", "norm": "linf", "epsilon": 0.1, "steps": 100, "restarts": 10, "accuracy": accuracy}

# What ztml recorded before the gate asked for the worst case over PGD and AutoAttack.
old_pgd(accuracy) := {"attack": "pgd", "norm": "linf", "epsilon": 0.1, "steps": 20, "restarts": 2, "accuracy": accuracy}

evaluation(results) := {"dataset": "sklearn-digits/test", "clean_accuracy": 0.98, "robust": results}

record(seq, type, signer, payload) := {
	"seq": seq, "type": type, "time": "2026-11-22T10:00:00Z", "model_digest": digest,
	"signer": signer, "payload": payload, "prev_hash": "00", "hash": "11", "signature": "c2ln",
}

register(seq, signer, results) := record(seq, "register", signer, {
	"name": "digits-mlp", "version": "1",
	"artifact": {"digest": digest, "format": "safetensors", "size": 1024},
	"training_data_digest": other_digest, "code_revision": "unknown",
	"hyperparameters": {}, "evaluation": evaluation(results),
})

approve(seq, signer) := record(seq, "approve", signer, {"comment": "ok"})

good_records := [register(0, trainer, [robust(0.85)]), approve(1, approver)]

gate(records) := {
	"digest": digest,
	"ledger": {"verified": true, "records": records},
	"trust": {"trainer_key_ids": [trainer.key_id], "approver_key_ids": [approver.key_id]},
}

decide(inp) := d if {
	d := prov.decision with input as inp
}

denied(d, fragment) if {
	d.allow == false
	some reason in d.reasons
	contains(reason, fragment)
}

not_denied(d, fragment) if {
	every reason in d.reasons {
		not contains(reason, fragment)
	}
}

test_allow_registered_evaluated_approved_model if {
	decide(gate(good_records)) == {"allow": true, "reasons": []}
}

test_allow_later_evaluate_record_by_trainer if {
	records := [register(0, trainer, [robust(0.5)]), record(1, "evaluate", trainer, {"evaluation": evaluation([robust(0.9)])}), approve(2, approver)]
	decide(gate(records)).allow == true
}

test_allow_stronger_epsilon_counts if {
	stronger := object.union(robust(0.82), {"epsilon": 0.2, "steps": 200, "restarts": 20})
	decide(gate([register(0, trainer, [stronger]), approve(1, approver)])).allow == true
}

test_allow_records_of_other_models_are_ignored if {
	other := object.union(record(5, "revoke", trainer, {"reason": "x"}), {"model_digest": other_digest})
	decide(gate(array.concat(good_records, [other]))).allow == true
}

test_allow_input_requirements_override_defaults if {
	inp := object.union(gate([register(0, trainer, [robust(0.7)]), approve(1, approver)]), {"requirements": {"min_robust_accuracy": 0.6}})
	decide(inp).allow == true
}

test_allow_default_requirements_come_from_data if {
	prov.requirements == {
		"min_robust_accuracy": 0.8, "epsilon": 0.1, "attack": "worst-case", "min_steps": 100, "min_restarts": 10,
		"by_modality": {"image": {}, "tabular": {"epsilon": 0.05}},
	} with input as gate(good_records)
}

test_allow_input_requirements_without_data if {
	required := {"min_robust_accuracy": 0.8, "epsilon": 0.1, "attack": "worst-case", "min_steps": 100, "min_restarts": 10}
	inp := object.union(gate(good_records), {"requirements": required})
	d := prov.decision with input as inp with data.data as {}
	d == {"allow": true, "reasons": []}
}

test_deny_without_requirements_data_or_input if {
	d := prov.decision with input as gate(good_records) with data.data as {}
	denied(d, "input field requirements is missing or invalid")
}

test_deny_unverified_ledger if {
	inp := object.union(gate(good_records), {"ledger": {"verified": false}})
	denied(decide(inp), "ledger is not verified")
}

test_deny_missing_verified_flag if {
	inp := {"digest": digest, "ledger": {"records": good_records}, "trust": gate(good_records).trust}
	denied(decide(inp), "ledger is not verified")
}

test_deny_empty_input if {
	d := decide({})
	denied(d, "input field digest is missing")
	denied(d, "input field ledger.records is missing")
	denied(d, "input field trust is missing")
	denied(d, "ledger is not verified")
}

test_deny_records_not_objects if {
	denied(decide(gate(["register"])), "ledger.records is missing or invalid")
}

test_deny_bad_requirements if {
	inp := object.union(gate(good_records), {"requirements": {"min_steps": "many"}})
	denied(decide(inp), "input field requirements is missing or invalid")
}

test_deny_bad_min_restarts if {
	inp := object.union(gate(good_records), {"requirements": {"min_restarts": 1.5}})
	denied(decide(inp), "integer min_steps and min_restarts")
}

test_deny_unregistered_model if {
	denied(decide(gate([approve(1, approver)])), "no register record for")
}

test_deny_registration_by_untrusted_key if {
	d := decide(gate([register(0, stranger, [robust(0.9)]), approve(1, approver)]))
	denied(d, "register record seq 0 is signed by untrusted key ed25519:cccccccccccccccc")
}

test_deny_robust_accuracy_below_threshold if {
	d := decide(gate([register(0, trainer, [robust(0.79)]), approve(1, approver)]))
	denied(d, "no trusted evaluation reaches robust accuracy >= 0.8 under worst-case at epsilon >= 0.1 with >= 100 steps and >= 10 restarts, as image models require (found: [\"worst-case eps=0.1 steps=100 restarts=10 acc=0.79\"])")
	count(d.reasons) == 1
}

test_deny_weaker_epsilon if {
	weak := object.union(robust(0.95), {"epsilon": 0.05})
	denied(decide(gate([register(0, trainer, [weak]), approve(1, approver)])), "no trusted evaluation reaches")
}

test_deny_too_few_steps if {
	weak := object.union(robust(0.95), {"steps": 20})
	d := decide(gate([register(0, trainer, [weak]), approve(1, approver)]))
	denied(d, "evaluation used 20 PGD steps, the gate requires >= 100")
	denied(d, "no trusted evaluation reaches")
}

test_deny_too_few_restarts if {
	weak := object.union(robust(0.95), {"restarts": 3})
	d := decide(gate([register(0, trainer, [weak]), approve(1, approver)]))
	denied(d, "evaluation used 3 PGD restarts, the gate requires >= 10")
	not_denied(d, "PGD steps")
}

test_deny_result_without_restarts if {
	weak := object.remove(robust(0.95), {"restarts"})
	denied(decide(gate([register(0, trainer, [weak]), approve(1, approver)])), "no trusted evaluation reaches")
}

test_deny_old_pgd_evaluation_names_what_is_missing if {
	d := decide(gate([register(0, trainer, [old_pgd(0.95), object.union(old_pgd(0.9), {"attack": "fgsm", "steps": 1, "restarts": 1})]), approve(1, approver)]))
	denied(d, "no trusted evaluation recorded attack worst-case, the gate requires it for image models (recorded: [\"fgsm\", \"pgd\"])")
	denied(d, "evaluation used 20 PGD steps, the gate requires >= 100")
	denied(d, "evaluation used 2 PGD restarts, the gate requires >= 10")
	count(d.reasons) == 4
}

test_deny_steps_of_the_required_attack_are_reported if {
	strong_other := object.union(robust(0.95), {"attack": "pgd", "steps": 500, "restarts": 50})
	weak := object.union(robust(0.95), {"steps": 30})
	d := decide(gate([register(0, trainer, [strong_other, weak]), approve(1, approver)]))
	denied(d, "evaluation used 30 PGD steps, the gate requires >= 100")
	not_denied(d, "recorded attack")
}

test_deny_other_attack if {
	fgsm := object.union(robust(0.95), {"attack": "fgsm"})
	d := decide(gate([register(0, trainer, [fgsm]), approve(1, approver)]))
	denied(d, "no trusted evaluation reaches")
	denied(d, "no trusted evaluation recorded attack worst-case")
}

test_deny_required_norm_mismatch if {
	inp := object.union(gate(good_records), {"requirements": {"norm": "l2"}})
	denied(decide(inp), "no trusted evaluation reaches")
}

test_allow_required_norm_match if {
	inp := object.union(gate(good_records), {"requirements": {"norm": "linf"}})
	decide(inp).allow == true
}

test_deny_evaluation_by_untrusted_key if {
	records := [register(0, trainer, [robust(0.5)]), record(1, "evaluate", stranger, {"evaluation": evaluation([robust(0.9)])}), approve(2, approver)]
	denied(decide(gate(records)), "no trusted evaluation reaches")
}

test_deny_evaluation_before_registration if {
	records := [record(0, "evaluate", trainer, {"evaluation": evaluation([robust(0.9)])}), register(1, trainer, [robust(0.5)]), approve(2, approver)]
	denied(decide(gate(records)), "no trusted evaluation reaches")
}

test_deny_unapproved_model if {
	denied(decide(gate([register(0, trainer, [robust(0.9)])])), "no approve record for")
}

test_deny_approval_by_untrusted_key if {
	denied(decide(gate([register(0, trainer, [robust(0.9)]), approve(1, stranger)])), "approve record seq 1 is signed by untrusted key")
}

test_deny_self_approval_by_trainer_identity if {
	# A second key for the same person is still the same person.
	same_person := {"identity": trainer.identity, "key_id": approver.key_id}
	denied(decide(gate([register(0, trainer, [robust(0.9)]), approve(1, same_person)])), "signed by the trainer identity trainer@ztml")
}

test_deny_self_approval_with_trainer_key if {
	inp := object.union(gate([register(0, trainer, [robust(0.9)]), approve(1, {"identity": "alias@ztml", "key_id": trainer.key_id})]), {"trust": {"approver_key_ids": [trainer.key_id]}})
	denied(decide(inp), "signed with the trainer key")
}

test_deny_approval_before_registration if {
	denied(decide(gate([approve(0, approver), register(1, trainer, [robust(0.9)])])), "approve record seq 0 precedes the trusted registration")
}

test_deny_revoked_model if {
	records := array.concat(good_records, [record(2, "revoke", approver, {"reason": "backdoor found"})])
	denied(decide(gate(records)), "model was revoked at seq 2: backdoor found")
}

test_deny_revoked_without_reason if {
	revoke := object.remove(record(2, "revoke", approver, {}), ["payload"])
	denied(decide(gate(array.concat(good_records, [revoke]))), "no reason given")
}

test_deny_lists_every_reason if {
	d := decide(object.union(gate([register(0, trainer, [robust(0.1)]), approve(1, trainer)]), {"ledger": {"verified": false}}))
	count(d.reasons) >= 4
}
