"""The local stack (``ztml up`` / ``ztml down``): OPA and the model service on 127.0.0.1."""
