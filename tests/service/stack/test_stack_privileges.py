import os
from pathlib import Path

import pytest

from service.keys.store import init_keys
from service.stack.errors import StackError
from service.stack.privileges import (
    RunAs,
    check_reachable,
    check_readable_tree,
    hand_over,
    service_account,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


def test_a_normal_user_keeps_running_the_servers_itself(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert service_account() is None


@root_only
def test_root_gets_the_unprivileged_service_account():
    account = service_account()
    assert account is not None
    assert account.name == "ztml"
    assert account.uid != 0
    assert account.gid != 0


@root_only
def test_a_home_behind_a_private_directory_is_refused_with_the_fix(tmp_path: Path):
    account = service_account()
    assert account is not None
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(StackError, match="cannot reach") as excinfo:
        check_reachable(account, {"directory holding ZTML_HOME": private})
    assert str(private) in str(excinfo.value)
    assert "/var/lib/ztml" in str(excinfo.value)
    os.chmod(private, 0o711)
    check_reachable(account, {"directory holding ZTML_HOME": private})


@root_only
def test_hand_over_keeps_the_model_vouching_keys_with_root(tmp_path: Path):
    account = service_account()
    assert account is not None
    home = tmp_path / "home"
    home.mkdir()
    init_keys(home / "keys")
    (home / "audit").mkdir()
    (home / "audit" / "segment.jsonl").write_text("{}\n")
    hand_over(home, account)
    owner = {p.name: p.stat().st_uid for p in (home / "keys").iterdir()}
    assert owner["trainer.key"] == 0
    assert owner["approver.key"] == 0
    assert owner["audit.key"] == account.uid
    assert owner["issuer.key"] == account.uid
    assert (home / "audit" / "segment.jsonl").stat().st_uid == account.uid
    assert home.stat().st_uid == account.uid
    assert oct(home.stat().st_mode & 0o777) == oct(0o700)


def test_reachability_follows_the_owner_group_and_other_bits(tmp_path: Path):
    me = RunAs(name="me", uid=os.getuid(), gid=os.getgid())
    stranger = RunAs(name="stranger", uid=os.getuid() + 4242, gid=os.getgid() + 4242)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    check_reachable(me, {"dir": shared})
    if os.geteuid() == 0:
        with pytest.raises(StackError):
            check_reachable(stranger, {"dir": shared})


def test_a_package_with_a_file_its_servers_cannot_read_is_named_with_the_fix(tmp_path: Path):
    stranger = RunAs(name="stranger", uid=os.getuid() + 4242, gid=os.getgid() + 4242)
    package = tmp_path / "pkg"
    (package / "data").mkdir(parents=True)
    for name in ("ztml-model.json", "model.safetensors", "data/validation.safetensors"):
        (package / name).write_text("x")
        (package / name).chmod(0o644)
    tmp_path.chmod(0o755)
    package.chmod(0o755)
    (package / "data").chmod(0o755)
    check_readable_tree(stranger, "model package pkg", package)  # all readable
    (package / "model.safetensors").chmod(0o600)  # what safetensors writes
    with pytest.raises(StackError, match=r"model\.safetensors.*chmod -R a\+rX"):
        check_readable_tree(stranger, "model package pkg", package)
