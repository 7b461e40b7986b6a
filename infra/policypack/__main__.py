"""CrossGuard policy pack: ztml's Kubernetes admission policy, evaluated by OPA.

Run with ``pulumi preview --policy-pack infra/policypack`` (see infra/README.md). Each
Kubernetes resource is turned into a manifest and reviewed as Gatekeeper would
(``{"review": {"object": ...}}`` against ``data.ztml.admission.deny``); every violation
is reported against the resource's URN. Cross-resource rules (a default-deny
NetworkPolicy must exist) run in the stack policy, which sees all resources.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The pack runs from its own directory; make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policypack.checks import Resource, check_resource, check_stack


def _validate_resource(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    resource = Resource(args.urn, args.name, args.resource_type, args.props)
    for finding in check_resource(resource):
        report_violation(finding.message, None)


def _validate_stack(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = [Resource(r.urn, r.name, r.resource_type, r.props) for r in args.resources]
    for finding in check_stack(resources):
        report_violation(finding.message, finding.urn)


PolicyPack(
    name="ztml-admission",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="ztml-admission-resource",
            description="Each Kubernetes resource passes data.ztml.admission.deny (OPA).",
            validate=_validate_resource,
        ),
        StackValidationPolicy(
            name="ztml-admission-stack",
            description=(
                "All Kubernetes resources together pass data.ztml.admission.deny, with the "
                "stack as Gatekeeper's inventory (default-deny NetworkPolicy present)."
            ),
            validate=_validate_stack,
        ),
    ],
)
