package ztml.admission_test

test_deny_host_network if {
	details := details_of(findings(deployment(pod_spec({"hostNetwork": true}))), "host namespace (hostNetwork: true)")
	details.field == "spec.template.spec.hostNetwork"
	details.container == null
}

test_deny_host_pid_and_ipc if {
	result := findings(deployment(pod_spec({"hostPID": true, "hostIPC": true})))
	has_finding(result, "hostPID: true")
	has_finding(result, "hostIPC: true")
}

test_allow_host_network_false if {
	count(findings(deployment(pod_spec({"hostNetwork": false})))) == 0
}

test_deny_privileged_container if {
	has_finding(findings(deployment(with_container({"securityContext": {"privileged": true}}))), "must not be privileged")
}

test_deny_host_port if {
	details := details_of(findings(deployment(with_container({"ports": [{"containerPort": 8080, "hostPort": 8080}]}))), "must not use host port 8080")
	details.field == "spec.template.spec.containers[0].ports[0].hostPort"
	details.value == 8080
}

test_allow_container_port_without_host_port if {
	count(findings(deployment(with_container({"ports": [{"containerPort": 8080}]})))) == 0
}

test_deny_host_path_volume if {
	spec := object.union(good_pod_spec, {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})
	details := details_of(findings(deployment(spec)), "uses type hostPath")
	details.field == "spec.template.spec.volumes[0].hostPath"
	details.value == {"path": "/"}
}

test_deny_other_volume_type if {
	spec := object.union(good_pod_spec, {"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]})
	has_finding(findings(deployment(spec)), "uses type nfs")
}

test_allow_every_allowed_volume_type if {
	volumes := [{"name": t, t: {}} | some t in ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"]]
	count(findings(deployment(object.union(good_pod_spec, {"volumes": volumes})))) == 0
}

test_deny_run_as_non_root_unset if {
	spec := {
		"automountServiceAccountToken": false,
		"containers": [json.remove(hardened_container("app"), ["securityContext/runAsNonRoot"])],
	}
	has_finding(findings(deployment(spec)), "must run as non-root (runAsNonRoot: null)")
}

test_allow_run_as_non_root_from_pod_level if {
	spec := pod_spec({"containers": [json.remove(hardened_container("app"), ["securityContext/runAsNonRoot"])]})
	count(findings(deployment(spec))) == 0
}

test_deny_container_overrides_pod_run_as_non_root if {
	has_finding(findings(deployment(with_container({"securityContext": {"runAsNonRoot": false}}))), "runAsNonRoot: false")
}

test_deny_pod_run_as_user_zero if {
	has_finding(findings(deployment(pod_spec({"securityContext": {"runAsUser": 0}}))), "pod securityContext.runAsUser")
}

test_deny_container_run_as_user_zero if {
	has_finding(findings(deployment(with_container({"securityContext": {"runAsUser": 0}}))), "must not run as user 0")
}

test_deny_privilege_escalation_unset if {
	container := json.remove(hardened_container("app"), ["securityContext/allowPrivilegeEscalation"])
	has_finding(findings(deployment(pod_spec({"containers": [container]}))), "allowPrivilegeEscalation: false")
}

test_deny_privilege_escalation_true if {
	has_finding(findings(deployment(with_container({"securityContext": {"allowPrivilegeEscalation": true}}))), "allowPrivilegeEscalation: false")
}

test_deny_capabilities_not_dropped if {
	has_finding(findings(deployment(with_container({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}))), "must drop ALL capabilities")
}

test_deny_added_capability if {
	details := details_of(findings(deployment(with_container({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}}))), "must not add capability SYS_ADMIN")
	details.value == "SYS_ADMIN"
}

test_allow_net_bind_service if {
	count(findings(deployment(with_container({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}})))) == 0
}

test_deny_seccomp_missing_everywhere if {
	spec := {
		"automountServiceAccountToken": false,
		"containers": [json.remove(hardened_container("app"), ["securityContext/seccompProfile"])],
	}
	has_finding(findings(deployment(spec)), "must use seccomp profile RuntimeDefault or Localhost (got null)")
}

test_allow_seccomp_from_pod_level if {
	spec := pod_spec({"containers": [json.remove(hardened_container("app"), ["securityContext/seccompProfile"])]})
	count(findings(deployment(spec))) == 0
}

test_allow_seccomp_localhost if {
	profile := {"seccompProfile": {"type": "Localhost", "localhostProfile": "ztml.json"}}
	count(findings(deployment(with_container({"securityContext": profile})))) == 0
}

test_deny_container_seccomp_unconfined if {
	has_finding(findings(deployment(with_container({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}))), "(got Unconfined)")
}

test_deny_pod_seccomp_unconfined if {
	has_finding(findings(deployment(pod_spec({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}))), "must not use pod seccomp profile Unconfined")
}

test_deny_init_container_checked if {
	init := json.remove(hardened_container("init"), ["securityContext/allowPrivilegeEscalation"])
	details := details_of(findings(deployment(pod_spec({"initContainers": [init]}))), "allowPrivilegeEscalation")
	details.container == "init"
	details.field == "spec.template.spec.initContainers[0].securityContext.allowPrivilegeEscalation"
}

test_deny_ephemeral_container_checked if {
	debug := {"name": "debug", "image": image, "securityContext": {"privileged": true}}
	result := findings({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ztml"}, "spec": pod_spec({"ephemeralContainers": [debug]})})
	details := details_of(result, "must not be privileged")
	details.field == "spec.ephemeralContainers[0].securityContext.privileged"
	not has_finding(result, "must set resources")
}

test_deny_windows_host_process if {
	has_finding(findings(deployment(pod_spec({"securityContext": {"windowsOptions": {"hostProcess": true}}}))), "Windows host processes")
}

test_deny_selinux_type if {
	has_finding(findings(deployment(with_container({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}))), "SELinux type spc_t")
}

test_allow_selinux_container_type if {
	count(findings(deployment(with_container({"securityContext": {"seLinuxOptions": {"type": "container_t"}}})))) == 0
}

test_deny_selinux_user if {
	has_finding(findings(deployment(pod_spec({"securityContext": {"seLinuxOptions": {"user": "system_u"}}}))), "must not set SELinux user")
}

test_deny_apparmor_unconfined if {
	has_finding(findings(deployment(with_container({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}))), "without AppArmor")
}

test_deny_unmasked_proc_mount if {
	has_finding(findings(deployment(with_container({"securityContext": {"procMount": "Unmasked"}}))), "default /proc mount")
}

test_deny_unsafe_sysctl if {
	has_finding(findings(deployment(pod_spec({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}))), "unsafe sysctl kernel.msgmax")
}

test_allow_safe_sysctl if {
	count(findings(deployment(pod_spec({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}})))) == 0
}

test_deny_apparmor_unconfined_annotation if {
	obj := json.patch(deployment(good_pod_spec), [{"op": "add", "path": "/spec/template/metadata/annotations", "value": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}}])
	details := details_of(findings(obj), "annotation container.apparmor")
	details.container == "app"
	details.field == "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]"
}

test_allow_apparmor_runtime_default_annotation if {
	obj := json.patch(deployment(good_pod_spec), [{"op": "add", "path": "/spec/template/metadata/annotations", "value": {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}}])
	count(findings(obj)) == 0
}
