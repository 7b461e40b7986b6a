# Container hardening beyond Pod Security Standards: read-only root filesystem,
# resource requests and limits, images pinned by digest from allowed registries,
# no service account token automount and no secrets in environment variables.
package ztml.admission

# METADATA
# title: Read-only root filesystem
# description: Every container must set readOnlyRootFilesystem true.
deny contains violation_of(
	sprintf("container %q of %s %q must set readOnlyRootFilesystem: true", [c.name, kind, name]),
	c.name, sprintf("%s.securityContext.readOnlyRootFilesystem", [c.path]), value,
) if {
	some c in containers
	value := object.get(container_sc(c), "readOnlyRootFilesystem", null)
	value != true
}

# METADATA
# title: Resource requests and limits
# description: Regular and init containers must request and limit cpu and memory (ephemeral containers cannot).
deny contains violation_of(
	sprintf("container %q of %s %q must set resources.%s.%s", [c.name, kind, name, bound, resource]),
	c.name, sprintf("%s.resources.%s.%s", [c.path, bound, resource]), null,
) if {
	some c in containers
	c.kind != "ephemeralContainers"
	some bound in ["requests", "limits"]
	some resource in ["cpu", "memory"]
	object.get(c.container, ["resources", bound, resource], null) == null
}

# METADATA
# title: Image digest pin
# description: Images must be pinned by digest (name@sha256:<64 hex>), never by a mutable tag.
deny contains violation_of(
	sprintf("container %q of %s %q must pin its image by digest (@sha256:...), got %v", [c.name, kind, name, image]),
	c.name, sprintf("%s.image", [c.path]), image,
) if {
	some c in containers
	image := object.get(c.container, "image", null)
	not pinned(image)
}

# METADATA
# title: Allowed registry
# description: Images must come from a registry prefix listed in allowed_registries.
deny contains violation_of(
	sprintf("container %q of %s %q uses image %v from a registry that is not allowed (allowed: %v)", [c.name, kind, name, image, settings.allowed_registries]),
	c.name, sprintf("%s.image", [c.path]), image,
) if {
	some c in containers
	image := object.get(c.container, "image", null)
	not allowed_registry(image)
}

# METADATA
# title: Service account token automount
# description: The pod spec must set automountServiceAccountToken false.
deny contains violation_of(
	sprintf("%s %q must set automountServiceAccountToken: false", [kind, name]),
	null, sprintf("%s.automountServiceAccountToken", [spec_path]), value,
) if {
	workload
	value := object.get(spec, "automountServiceAccountToken", null)
	value != false
}

# METADATA
# title: Secret in env (secretKeyRef)
# description: Secrets must be mounted as files, never passed through env valueFrom.secretKeyRef.
deny contains violation_of(
	sprintf("container %q of %s %q must not read secret %v into env var %v (mount it as a file)", [c.name, kind, name, ref.name, var.name]),
	c.name, sprintf("%s.env[%d].valueFrom.secretKeyRef", [c.path, i]), ref.name,
) if {
	some c in containers
	some i, var in object.get(c.container, "env", [])
	ref := var.valueFrom.secretKeyRef
}

# METADATA
# title: Secret in env (envFrom)
# description: Secrets must not be imported wholesale with envFrom.secretRef.
deny contains violation_of(
	sprintf("container %q of %s %q must not import secret %v with envFrom (mount it as a file)", [c.name, kind, name, source.secretRef.name]),
	c.name, sprintf("%s.envFrom[%d].secretRef", [c.path, i]), source.secretRef.name,
) if {
	some c in containers
	some i, source in object.get(c.container, "envFrom", [])
	source.secretRef
}

# METADATA
# title: Secret-looking env var
# description: >-
#   An env var whose name looks like a credential (*PASSWORD*, *TOKEN*, *SECRET*,
#   *CREDENTIAL*, *PRIVATE*, *APIKEY*, *_KEY) must not carry a literal value: mount
#   the secret as a file instead.
deny contains violation_of(
	sprintf("container %q of %s %q sets env var %s, which looks like a secret, to a literal value", [c.name, kind, name, var.name]),
	c.name, sprintf("%s.env[%d].value", [c.path, i]), var.name,
) if {
	some c in containers
	some i, var in object.get(c.container, "env", [])
	secret_name(var.name)
	var.value != ""
}

# METADATA
# title: Secret-looking env value
# description: An env var value that looks like a credential (private key, cloud key, token) is denied whatever its name.
deny contains violation_of(
	sprintf("container %q of %s %q sets env var %s to a value that looks like a secret", [c.name, kind, name, var.name]),
	c.name, sprintf("%s.env[%d].value", [c.path, i]), "<redacted>",
) if {
	some c in containers
	some i, var in object.get(c.container, "env", [])
	secret_value(var.value)
}

# METADATA
# title: Pinned image
# description: True when image ends in @sha256:<64 lowercase hex>.
pinned(image) if regex.match(`^[^@]+@sha256:[0-9a-f]{64}$`, image)

# METADATA
# title: Image from an allowed registry
# description: True when image starts with an allowed registry prefix.
allowed_registry(image) if {
	is_string(image)
	strings.any_prefix_match(image, settings.allowed_registries)
}

# METADATA
# title: Secret-looking name
# description: >-
#   True for names containing PASSWORD, PASSWD, TOKEN, SECRET, CREDENTIAL, PRIVATE,
#   APIKEY or API_KEY, or ending in _KEY (any case). The one rule for secret-looking
#   env var names: the Pulumi program relies on it through the CrossGuard policy pack.
secret_name(var_name) if regex.match(`(?i)(PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|PRIVATE|API_?KEY|_KEY$)`, var_name)

# METADATA
# title: Secret-looking value
# description: True for private keys, AWS access keys, GitHub tokens, JWTs and bearer tokens.
secret_value(value) if {
	some pattern in secret_value_patterns
	regex.match(pattern, value)
}

# METADATA
# title: Secret value patterns
# description: Regular expressions for values that are credentials.
secret_value_patterns := [
	`-----BEGIN [A-Z ]*PRIVATE KEY-----`,
	`^(AKIA|ASIA)[0-9A-Z]{16}$`,
	`^gh[pousr]_[A-Za-z0-9]{20,}$`,
	`^eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$`,
	`(?i)^bearer\s+\S{16,}$`,
]
