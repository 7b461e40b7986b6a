"""A local single-node Kubernetes built from upstream parts (``ztml cluster up|down|status``).

etcd, the control plane, kubelet, kube-proxy and kube-router run as host processes
recorded by PID; containerd, runc and the CNI plugins come from Debian's packages;
CoreDNS runs as a pod. Images are built without a registry and imported into the
cluster's own containerd.
"""
