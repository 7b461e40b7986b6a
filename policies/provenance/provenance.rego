# METADATA
# title: Deploy gate (model provenance)
# description: >-
#   Admits a model for deployment only when the verified provenance ledger shows
#   it was registered by a trusted trainer, evaluated as robust enough for its input
#   modality (requirements.rego), approved
#   by a different trusted approver, and never revoked. Query
#   data.ztml.provenance.decision for {"allow", "reasons"}; a denial lists every reason.
# entrypoint: true
package ztml.provenance

import data.ztml.lib.inputs as v

# ---------------------------------------------------------------------------
# Input validation.
# ---------------------------------------------------------------------------

# METADATA
# title: Valid digest
# description: input.digest is sha256:<64 lowercase hex>.
digest_ok if v.digest(input.digest)

# METADATA
# title: Valid records
# description: input.ledger.records is an array of objects.
records_ok if {
	is_array(input.ledger.records)
	every record in input.ledger.records {
		is_object(record)
	}
}

# METADATA
# title: Valid trust
# description: The trust lists are arrays of key ids.
trust_ok if {
	v.string_array(input.trust.trainer_key_ids)
	v.string_array(input.trust.approver_key_ids)
}

# METADATA
# title: Valid input
# description: True only when every part of the input is well formed.
valid if {
	digest_ok
	records_ok
	trust_ok
	requirements_ok
}

# ---------------------------------------------------------------------------
# Ledger facts.
# ---------------------------------------------------------------------------

# METADATA
# title: Records for the digest
# description: The ledger records about the model under review.
records contains record if {
	valid
	some record in input.ledger.records
	record.model_digest == input.digest
}

# METADATA
# title: Records of a type
# description: The digest's records of the given type.
of_type(type) := {record | some record in records; record.type == type}

# METADATA
# title: Trusted registrations
# description: register records for the digest signed by a trusted trainer key.
registrations contains record if {
	some record in of_type("register")
	record.signer.key_id in input.trust.trainer_key_ids
}

# METADATA
# title: Robust results
# description: >-
#   Robust-accuracy results for a trusted registration: those in the register
#   payload and in later evaluate records signed by a trusted trainer key.
robust_results contains [registration, result] if {
	some registration in registrations
	some result in registration.payload.evaluation.robust
}

# METADATA
# title: Robust results from evaluate records
# description: Results of evaluate records made after the registration by a trusted trainer.
robust_results contains [registration, result] if {
	some registration in registrations
	some record in of_type("evaluate")
	record.seq > registration.seq
	record.signer.key_id in input.trust.trainer_key_ids
	some result in record.payload.evaluation.robust
}

# METADATA
# title: Passing result
# description: >-
#   A result meets the requirement: the required attack, at least the required epsilon,
#   steps and restarts, and accuracy high enough.
passes(result, required) if {
	result.attack == required.attack
	result.epsilon >= required.epsilon
	result.steps >= required.min_steps
	result.restarts >= required.min_restarts
	result.accuracy >= required.min_robust_accuracy
	norm_matches(result, required)
}

# METADATA
# title: Norm matches
# description: Any norm passes when the requirements name none.
norm_matches(_, required) if not required.norm

# METADATA
# title: Norm matches (required)
# description: The result's norm must equal a required norm.
norm_matches(result, required) if result.norm == required.norm

# METADATA
# title: Modalities
# description: >-
#   The input modalities of the trusted registrations (normally one): each registration's
#   results are held to its modality's requirements.
modalities contains modality(registration) if some registration in registrations

# METADATA
# title: Robust enough
# description: Some trusted registration has a result passing its modality's requirements.
robust_enough if {
	some [registration, result] in robust_results
	passes(result, required(modality(registration)))
}

# METADATA
# title: Results of a modality
# description: Trusted robust results of the registrations of that modality.
results_of(modality_name) := {result |
	some [registration, result] in robust_results
	modality(registration) == modality_name
}

# METADATA
# title: Results of the required attack
# description: A modality's results recorded under the attack its requirements name.
results_of_attack(modality_name) := {result |
	some result in results_of(modality_name)
	result.attack == required(modality_name).attack
}

# METADATA
# title: Measured results
# description: >-
#   The results whose steps and restarts a denial reports: those of the required
#   attack, or every result of the modality when none used it (an older, weaker evaluation).
measured(modality_name) := results_of_attack(modality_name) if count(results_of_attack(modality_name)) > 0

# METADATA
# title: Measured results (no result of the required attack)
# description: Every result of the modality.
measured(modality_name) := results_of(modality_name) if count(results_of_attack(modality_name)) == 0

# METADATA
# title: Most steps measured
# description: The most attack steps any measured result of the modality recorded.
most_steps(modality_name) := max({result.steps | some result in measured(modality_name); is_number(result.steps)})

# METADATA
# title: Most restarts measured
# description: The most random restarts any measured result of the modality recorded.
most_restarts(modality_name) := max({result.restarts | some result in measured(modality_name); is_number(result.restarts)})

# METADATA
# title: Approval problems
# description: Why an approve record does not count, for each problem it has.
approval_problems[record.seq] contains sprintf("approve record seq %v is signed by untrusted key %v", [record.seq, record.signer.key_id]) if {
	some record in of_type("approve")
	not record.signer.key_id in input.trust.approver_key_ids
}

# METADATA
# title: Approval by the trainer identity
# description: The approver identity must differ from the trainer's (separation of duties).
approval_problems[record.seq] contains sprintf("approve record seq %v is signed by the trainer identity %v (separation of duties)", [record.seq, record.signer.identity]) if {
	some record in of_type("approve")
	some registration in registrations
	record.signer.identity == registration.signer.identity
}

# METADATA
# title: Approval with the trainer key
# description: The approver key must differ from the trainer's key.
approval_problems[record.seq] contains sprintf("approve record seq %v is signed with the trainer key %v (separation of duties)", [record.seq, record.signer.key_id]) if {
	some record in of_type("approve")
	some registration in registrations
	record.signer.key_id == registration.signer.key_id
}

# METADATA
# title: Approval before registration
# description: An approval counts only after a trusted registration.
approval_problems[record.seq] contains sprintf("approve record seq %v precedes the trusted registration", [record.seq]) if {
	count(registrations) > 0
	some record in of_type("approve")
	every registration in registrations {
		record.seq <= registration.seq
	}
}

# METADATA
# title: Valid approvals
# description: approve records without any problem, made after a trusted registration.
approvals contains record if {
	count(registrations) > 0
	some record in of_type("approve")
	record.signer.key_id in input.trust.approver_key_ids
	not approval_problems[record.seq]
}

# ---------------------------------------------------------------------------
# Reasons and decision.
# ---------------------------------------------------------------------------

# METADATA
# title: Bad digest
# description: The digest must be well formed.
reasons contains v.invalid_field("digest", "sha256:<64 lowercase hex>") if not digest_ok

# METADATA
# title: Bad records
# description: The ledger records must be an array of objects.
reasons contains v.invalid_field("ledger.records", "an array of ledger records") if not records_ok

# METADATA
# title: Bad trust
# description: The trust lists must be arrays of key ids.
reasons contains v.invalid_field("trust", "trainer_key_ids and approver_key_ids arrays of key ids") if not trust_ok

# METADATA
# title: Bad requirements
# description: The requirements must be well typed.
reasons contains v.invalid_field("requirements", "min_robust_accuracy in [0, 1], epsilon >= 0, attack name, integer min_steps and min_restarts, by_modality of modality name to overrides of those fields") if {
	not requirements_ok
}

# METADATA
# title: Ledger not verified
# description: The ledger's hash chain and signatures must have been verified.
reasons contains "ledger is not verified (ledger.verified must be true)" if {
	not input.ledger.verified == true
}

# METADATA
# title: Not registered
# description: The digest needs a register record.
reasons contains sprintf("no register record for %s", [input.digest]) if {
	valid
	count(of_type("register")) == 0
}

# METADATA
# title: Untrusted registration
# description: The register record must be signed by a trusted trainer key.
reasons contains sprintf("register record seq %v is signed by untrusted key %v", [record.seq, record.signer.key_id]) if {
	some record in of_type("register")
	not record in registrations
}

# METADATA
# title: No modality
# description: A registered contract must declare its input modality.
reasons contains sprintf("register record seq %v has a contract without an input modality (contract.document.input.modality)", [record.seq]) if {
	some record in registrations
	not modality(record)
}

# METADATA
# title: Conflicting modalities
# description: The trusted registrations of one digest must agree on its input modality.
reasons contains sprintf("trusted register records of %s declare different input modalities %v; the gate cannot tell which requirements apply", [input.digest, sort(modalities)]) if {
	count(modalities) > 1
}

# METADATA
# title: Not robust enough
# description: A trusted evaluation must meet the robustness requirement of the model's modality.
reasons contains sprintf(
	"no trusted evaluation reaches robust accuracy >= %v under %v at epsilon >= %v with >= %v steps and >= %v restarts, as %v models require (found: %v)",
	[required_here.min_robust_accuracy, required_here.attack, required_here.epsilon, required_here.min_steps, required_here.min_restarts, modality_name, found],
) if {
	not robust_enough
	some modality_name in modalities
	required_here := required(modality_name)
	found := sort([sprintf("%v eps=%v steps=%v restarts=%v acc=%v", [r.attack, r.epsilon, r.steps, r.restarts, r.accuracy]) | some r in results_of(modality_name)])
}

# METADATA
# title: Required attack not recorded
# description: The trusted evaluations must record the attack the modality requires.
reasons contains sprintf("no trusted evaluation recorded attack %v, the gate requires it for %v models (recorded: %v)", [required(modality_name).attack, modality_name, recorded]) if {
	not robust_enough
	some modality_name in modalities
	count(results_of_attack(modality_name)) == 0
	recorded := sort({r.attack | some r in results_of(modality_name)})
}

# METADATA
# title: Too few steps
# description: The evaluation must have used at least the required attack steps.
reasons contains sprintf("evaluation used %v PGD steps, the gate requires >= %v for %v models", [most_steps(modality_name), required(modality_name).min_steps, modality_name]) if {
	not robust_enough
	some modality_name in modalities
	most_steps(modality_name) < required(modality_name).min_steps
}

# METADATA
# title: Too few restarts
# description: The evaluation must have used at least the required random restarts.
reasons contains sprintf("evaluation used %v PGD restarts, the gate requires >= %v for %v models", [most_restarts(modality_name), required(modality_name).min_restarts, modality_name]) if {
	not robust_enough
	some modality_name in modalities
	most_restarts(modality_name) < required(modality_name).min_restarts
}

# METADATA
# title: Not approved
# description: The digest needs an approve record.
reasons contains sprintf("no approve record for %s", [input.digest]) if {
	valid
	count(of_type("approve")) == 0
}

# METADATA
# title: Approval problems
# description: Every problem of every approve record, when none counts.
reasons contains problem if {
	count(approvals) == 0
	some problems in approval_problems
	some problem in problems
}

# METADATA
# title: Revoked
# description: A revoke record for the digest denies deployment.
reasons contains sprintf("model was revoked at seq %v: %v", [record.seq, object.get(record, ["payload", "reason"], "no reason given")]) if {
	some record in of_type("revoke")
}

# METADATA
# title: Allow
# description: Deny unless every condition holds.
default allow := false

# METADATA
# title: Allow (all conditions hold)
# description: Verified ledger, trusted registration, robust evaluation, independent approval, no revocation.
allow if {
	valid
	input.ledger.verified == true
	count(registrations) > 0
	robust_enough
	count(approvals) > 0
	count(of_type("revoke")) == 0
	count(reasons) == 0
}

# METADATA
# title: Decision
# description: The deploy gate's answer.
decision := {"allow": allow, "reasons": sort(reasons)}
