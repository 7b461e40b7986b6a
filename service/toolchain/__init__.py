"""Find, check and install the external tools ztml runs (OPA, PostgreSQL, ...)."""
