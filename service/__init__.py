"""ztml serving stack."""
