# Pod Security Standards "restricted" in full (which includes baseline), for
# regular, init and ephemeral containers, combining pod- and container-level
# securityContext the way Kubernetes does: a container setting overrides the pod's.
package ztml.admission

import data.ztml.lib.k8s

# METADATA
# title: Host namespaces
# description: hostNetwork, hostPID and hostIPC must be unset or false.
deny contains violation_of(
	sprintf("%s %q must not share the host namespace (%s: true)", [kind, name, field]),
	null, sprintf("%s.%s", [spec_path, field]), true,
) if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	spec[field] == true
}

# METADATA
# title: Privileged containers
# description: securityContext.privileged must be unset or false.
deny contains violation_of(
	sprintf("container %q of %s %q must not be privileged", [c.name, kind, name]),
	c.name, sprintf("%s.securityContext.privileged", [c.path]), true,
) if {
	some c in containers
	container_sc(c).privileged == true
}

# METADATA
# title: Host ports
# description: Containers must not bind host ports.
deny contains violation_of(
	sprintf("container %q of %s %q must not use host port %v", [c.name, kind, name, port.hostPort]),
	c.name, sprintf("%s.ports[%d].hostPort", [c.path, i]), port.hostPort,
) if {
	some c in containers
	some i, port in object.get(c.container, "ports", [])
	object.get(port, "hostPort", 0) != 0
}

# METADATA
# title: Volume types
# description: Only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret volumes (so never hostPath).
deny contains violation_of(
	sprintf("volume %q of %s %q uses type %s, which is not allowed (allowed: %v)", [volume_name, kind, name, type, settings.allowed_volume_types]),
	null, sprintf("%s.volumes[%d].%s", [spec_path, i, type]), source,
) if {
	some i, volume in object.get(spec, "volumes", [])
	some type, source in volume
	type != "name"
	not type in settings.allowed_volume_types
	volume_name := object.get(volume, "name", sprintf("volumes[%d]", [i]))
}

# METADATA
# title: Run as non-root
# description: >-
#   runAsNonRoot must be true, set on the container or on the pod and not
#   overridden to false by the container.
deny contains violation_of(
	sprintf("container %q of %s %q must run as non-root (runAsNonRoot: %v)", [c.name, kind, name, effective]),
	c.name, sprintf("%s.securityContext.runAsNonRoot", [c.path]), effective,
) if {
	some c in containers
	effective := object.get(container_sc(c), "runAsNonRoot", object.get(pod_sc, "runAsNonRoot", null))
	effective != true
}

# METADATA
# title: Pod runs as root user
# description: The pod-level runAsUser must not be 0.
deny contains violation_of(
	sprintf("%s %q must not run as user 0 (pod securityContext.runAsUser)", [kind, name]),
	null, sprintf("%s.securityContext.runAsUser", [spec_path]), 0,
) if {
	pod_sc.runAsUser == 0
}

# METADATA
# title: Container runs as root user
# description: A container's runAsUser must not be 0.
deny contains violation_of(
	sprintf("container %q of %s %q must not run as user 0", [c.name, kind, name]),
	c.name, sprintf("%s.securityContext.runAsUser", [c.path]), 0,
) if {
	some c in containers
	container_sc(c).runAsUser == 0
}

# METADATA
# title: Privilege escalation
# description: allowPrivilegeEscalation must be explicitly false on every container.
deny contains violation_of(
	sprintf("container %q of %s %q must set allowPrivilegeEscalation: false", [c.name, kind, name]),
	c.name, sprintf("%s.securityContext.allowPrivilegeEscalation", [c.path]), value,
) if {
	some c in containers
	value := object.get(container_sc(c), "allowPrivilegeEscalation", null)
	value != false
}

# METADATA
# title: Drop all capabilities
# description: Every container must drop ALL capabilities.
deny contains violation_of(
	sprintf("container %q of %s %q must drop ALL capabilities", [c.name, kind, name]),
	c.name, sprintf("%s.securityContext.capabilities.drop", [c.path]), dropped,
) if {
	some c in containers
	dropped := object.get(container_sc(c), ["capabilities", "drop"], [])
	not "ALL" in dropped
}

# METADATA
# title: Added capabilities
# description: A container may add no capability except NET_BIND_SERVICE.
deny contains violation_of(
	sprintf("container %q of %s %q must not add capability %s (allowed: %v)", [c.name, kind, name, capability, settings.allowed_capabilities]),
	c.name, sprintf("%s.securityContext.capabilities.add", [c.path]), capability,
) if {
	some c in containers
	some capability in object.get(container_sc(c), ["capabilities", "add"], [])
	not capability in settings.allowed_capabilities
}

# METADATA
# title: Seccomp profile
# description: >-
#   The effective seccomp profile of every container (its own, else the pod's)
#   must be RuntimeDefault or Localhost.
deny contains violation_of(
	sprintf("container %q of %s %q must use seccomp profile RuntimeDefault or Localhost (got %v)", [c.name, kind, name, effective]),
	c.name, sprintf("%s.securityContext.seccompProfile.type", [c.path]), effective,
) if {
	some c in containers
	effective := object.get(container_sc(c), ["seccompProfile", "type"], object.get(pod_sc, ["seccompProfile", "type"], null))
	not effective in settings.allowed_seccomp_types
}

# METADATA
# title: Pod seccomp profile
# description: A pod-level seccomp profile, when set, must be RuntimeDefault or Localhost.
deny contains violation_of(
	sprintf("%s %q must not use pod seccomp profile %v", [kind, name, pod_sc.seccompProfile.type]),
	null, sprintf("%s.securityContext.seccompProfile.type", [spec_path]), pod_sc.seccompProfile.type,
) if {
	not pod_sc.seccompProfile.type in settings.allowed_seccomp_types
}

# METADATA
# title: Windows host process
# description: windowsOptions.hostProcess must not be true (baseline).
deny contains violation_of(
	sprintf("%s %q must not run Windows host processes", [kind, name]),
	container, sprintf("%s.windowsOptions.hostProcess", [path]), true,
) if {
	some [container, path, sc] in security_contexts
	sc.windowsOptions.hostProcess == true
}

# METADATA
# title: SELinux type
# description: seLinuxOptions.type must be empty or one of the container types (baseline).
deny contains violation_of(
	sprintf("%s %q must not use SELinux type %v", [kind, name, sc.seLinuxOptions.type]),
	container, sprintf("%s.seLinuxOptions.type", [path]), sc.seLinuxOptions.type,
) if {
	some [container, path, sc] in security_contexts
	not sc.seLinuxOptions.type in {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
}

# METADATA
# title: SELinux user and role
# description: seLinuxOptions.user and role must not be set (baseline).
deny contains violation_of(
	sprintf("%s %q must not set SELinux %s", [kind, name, field]),
	container, sprintf("%s.seLinuxOptions.%s", [path, field]), value,
) if {
	some [container, path, sc] in security_contexts
	some field in ["user", "role"]
	value := sc.seLinuxOptions[field]
	value != ""
}

# METADATA
# title: AppArmor profile
# description: appArmorProfile.type must not be Unconfined (baseline).
deny contains violation_of(
	sprintf("%s %q must not run without AppArmor (appArmorProfile.type Unconfined)", [kind, name]),
	container, sprintf("%s.appArmorProfile.type", [path]), "Unconfined",
) if {
	some [container, path, sc] in security_contexts
	sc.appArmorProfile.type == "Unconfined"
}

# METADATA
# title: AppArmor annotation
# description: The legacy per-container AppArmor annotation must not say unconfined (baseline).
deny contains violation_of(
	sprintf("container %q of %s %q must not run without AppArmor (annotation %s)", [container, kind, name, key]),
	container, sprintf("%s.annotations[%s]", [k8s.pod_metadata_path(reviewed), key]), profile,
) if {
	workload
	some key, profile in object.get(k8s.pod_metadata(reviewed), "annotations", {})
	startswith(key, "container.apparmor.security.beta.kubernetes.io/")
	profile == "unconfined"
	container := substring(key, count("container.apparmor.security.beta.kubernetes.io/"), -1)
}

# METADATA
# title: proc mount
# description: procMount must be Default (baseline).
deny contains violation_of(
	sprintf("container %q of %s %q must use the default /proc mount", [c.name, kind, name]),
	c.name, sprintf("%s.securityContext.procMount", [c.path]), container_sc(c).procMount,
) if {
	some c in containers
	container_sc(c).procMount != "Default"
}

# METADATA
# title: Safe sysctls
# description: Only the namespaced sysctls the baseline profile lists as safe may be set.
deny contains violation_of(
	sprintf("%s %q must not set unsafe sysctl %v", [kind, name, sysctl.name]),
	null, sprintf("%s.securityContext.sysctls[%d]", [spec_path, i]), sysctl.name,
) if {
	some i, sysctl in object.get(pod_sc, "sysctls", [])
	not sysctl.name in safe_sysctls
}

# METADATA
# title: Security contexts
# description: The pod-level and every container-level securityContext, with their field paths.
security_contexts contains [null, sprintf("%s.securityContext", [spec_path]), pod_sc] if workload

# METADATA
# title: Container security contexts
# description: Every container's securityContext with its field path.
security_contexts contains [c.name, sprintf("%s.securityContext", [c.path]), container_sc(c)] if {
	some c in containers
}

# METADATA
# title: Safe sysctl names
# description: The sysctls Pod Security Standards baseline allows.
safe_sysctls := {
	"kernel.shm_rmid_forced",
	"net.ipv4.ip_local_port_range",
	"net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.tcp_syncookies",
	"net.ipv4.ping_group_range",
	"net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_fin_timeout",
	"net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
}
