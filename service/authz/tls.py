"""TLS to OPA: verify OPA's certificate against the stack's CA and present a client one.

OPA started with ``--authentication=tls`` accepts only clients whose certificate the
stack's CA signed, so the model service (which holds the client key) is the only
process that can ask it for decisions, even on a shared host or in a shared pod.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from service.authz.errors import PolicyUnavailableError


@dataclass(frozen=True)
class OpaTls:
    """The files the service needs for mutual TLS with OPA.

    Attributes:
        ca_file: the CA that signed OPA's server certificate.
        cert_file: the service's client certificate (PEM).
        key_file: the client certificate's private key (PEM).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path

    def context(self) -> ssl.SSLContext:
        """Return a client context: TLS 1.2+, OPA verified by our CA, our certificate.

        Raises:
            PolicyUnavailableError: a file is missing or unreadable (the service then
                cannot get decisions and denies).
        """
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as err:
            raise PolicyUnavailableError(
                f"cannot set up TLS to OPA ({type(err).__name__}): check ZTML_OPA_CA_FILE, "
                "ZTML_OPA_CERT_FILE and ZTML_OPA_KEY_FILE"
            ) from None
        return context
