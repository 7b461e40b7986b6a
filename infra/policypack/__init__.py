"""ztml's admission policies as a Pulumi CrossGuard policy pack (and its OPA evaluator)."""
