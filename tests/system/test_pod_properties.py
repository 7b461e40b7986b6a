"""Properties only the model pod has, checked with pytest-testinfra (``kubectl://``).

The pod is the one of the stack the real Pulumi engine deploys onto the local cluster;
``--hosts='kubectl://POD?namespace=ztml&container=model'`` checks another.
"""

from __future__ import annotations

import pytest

from tests.system.targets import Target, kube_host

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.cluster]

testinfra_hosts = [kube_host()]


def test_root_filesystem_is_read_only(host, target: Target):
    assert target.kind == "kubernetes"
    result = host.run("touch /ztml-probe")
    assert result.rc != 0
    assert "Read-only file system" in result.stderr


def test_no_service_account_token_is_mounted(host, target: Target):
    assert not host.file("/var/run/secrets/kubernetes.io/serviceaccount/token").exists
    assert not host.file("/var/run/secrets/kubernetes.io").exists


def test_the_service_runs_as_the_numeric_user_of_the_hardened_pod(host, target: Target):
    assert host.check_output("id -u") == "10001"
    assert host.check_output("id -g") == "10001"


def test_the_model_served_is_the_one_in_the_image_read_only(host, target: Target):
    model = host.file("/opt/ztml/model/model.safetensors")
    assert model.exists
    assert host.run("touch /opt/ztml/model/model.safetensors").rc != 0
