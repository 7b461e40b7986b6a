"""Run the stack's servers as an unprivileged user when ``ztml up`` is started as root.

A root ``ztml up`` creates (once) the system user ``ztml`` with no login shell and runs
OPA and the model service as that user. The state directory is handed to it, except the
trainer's and approver's private keys: the serving processes never hold the keys that
vouch for models. Everything the servers need (the interpreter, the virtual environment,
the policies, ``ZTML_HOME``) must be reachable by that user; if not, start-up stops with a
message naming the path that is not, instead of failing later inside a server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from service.stack.errors import StackError

SERVICE_USER = "ztml"
#: Private keys that stay with root: they vouch for models, mint certificates or are a
#: caller's (the stack's own client certificate), and must not be in a server.
KEPT_FROM_SERVERS = (
    "keys/trainer.key",
    "keys/approver.key",
    "keys/oms-signer.key",
    "tls/ca.key",
    "tls/client.key",
)


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the servers run as."""

    name: str
    uid: int
    gid: int


def service_account(name: str = SERVICE_USER) -> RunAs | None:
    """Return the account to run servers as, or None when ztml does not run as root.

    Creates the system user on first use.

    Raises:
        StackError: the user does not exist and cannot be created.
    """
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise StackError(
                f"ztml runs its servers as the unprivileged user {name!r} when started as root, "
                f"and that user does not exist. Create it (`useradd --system {name}`) or run "
                "`ztml up` as a non-root user."
            ) from None
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--user-group", name],
            check=True,
            capture_output=True,
        )  # fmt: skip
        entry = pwd.getpwnam(name)
    return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def _reachable(path: Path, account: RunAs) -> bool:
    for part in [*reversed(path.parents), path]:
        try:
            info = part.stat()
        except OSError:
            return False
        if info.st_uid == account.uid:
            needed = stat.S_IXUSR
        elif info.st_gid == account.gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if stat.S_ISDIR(info.st_mode) and not info.st_mode & needed:
            return False
    return True


def _readable(info: os.stat_result, account: RunAs) -> bool:
    if info.st_uid == account.uid:
        return bool(info.st_mode & stat.S_IRUSR)
    if info.st_gid == account.gid:
        return bool(info.st_mode & stat.S_IRGRP)
    return bool(info.st_mode & stat.S_IROTH)


def check_readable_tree(account: RunAs, what: str, root: Path) -> None:
    """Check that ``account`` can read every file and list every directory under ``root``.

    Raises:
        StackError: naming the first path it cannot read, and the fix.
    """
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.stat()
        ok = _readable(info, account)
        if stat.S_ISDIR(info.st_mode):
            ok = ok and _reachable(path, account)
        if not ok:
            raise StackError(
                f"The servers run as the unprivileged user {account.name!r}, which cannot read "
                f"{path} of the {what} (mode {stat.filemode(info.st_mode)}). Make the package "
                f"readable (`chmod -R a+rX {root}`), or run `ztml up` as a non-root user."
            )


def check_reachable(account: RunAs, paths: dict[str, Path]) -> None:
    """Check that ``account`` can reach every named path (all parents traversable).

    Raises:
        StackError: a path is not reachable; the message names it and the fix.
    """
    for what, path in paths.items():
        real = Path(os.path.realpath(path))
        if not _reachable(real, account):
            raise StackError(
                f"The servers run as the unprivileged user {account.name!r}, which cannot reach "
                f"the {what} at {real}. Put it where that user can reach it (for ZTML_HOME, e.g. "
                f"/var/lib/ztml; for Python, an interpreter outside /root such as "
                f"/usr/bin/python3.11), or run `ztml up` as a non-root user."
            )


def hand_over(home: Path, account: RunAs) -> None:
    """Give the state directory to ``account``, keeping model-vouching keys with root."""
    os.chown(home, account.uid, account.gid)
    os.chmod(home, 0o700)
    for root, dirs, files in os.walk(home):
        for name in dirs:
            os.chown(Path(root) / name, account.uid, account.gid)
        for name in files:
            path = Path(root) / name
            keep = path.relative_to(home).as_posix() in KEPT_FROM_SERVERS
            uid, gid = (0, 0) if keep else (account.uid, account.gid)
            os.chown(path, uid, gid, follow_symlinks=False)
