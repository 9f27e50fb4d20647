"""Per-container customisation of a cloned tree: identity, network, locale, credentials."""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from pathlib import Path

from virtmix.errors import RootfsError
from virtmix.rootfs.base_setup import run_in_tree
from virtmix.rootfs.spec import ContainerSetup, InterfaceSetup
from virtmix.util.files import write_atomic, write_file

_HOST_KEY_TYPES = ("rsa", "ecdsa", "ed25519")



def generate_password() -> str:
    """A random root password (20 URL-safe characters) that does not start with '-', which
    tools and shells would take for an option when the admin pastes it."""
    while True:
        password = secrets.token_urlsafe(15)
        if not password.startswith("-"):
            return password

def _hosts(fqdn: str) -> str:
    short = fqdn.split(".")[0]
    names = f"{fqdn} {short}" if short != fqdn else fqdn
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")


def network_file(iface: InterfaceSetup) -> str:
    """A systemd-networkd .network file for one interface."""
    lines = ["# written by virtmix", "[Match]", f"Name={iface.name}", "", "[Network]"]
    if iface.dhcp:
        lines.append("DHCP=ipv4")
    if iface.ipv4:
        lines.append(f"Address={iface.ipv4}")
    if iface.gateway:
        lines.append(f"Gateway={iface.gateway}")
    # No IPv6 router solicitations on test/isolated networks unless asked for.
    lines.append("LinkLocalAddressing=no" if not iface.dhcp else "LinkLocalAddressing=ipv6")
    return "\n".join(lines) + "\n"


def set_identity(tree: Path, setup: ContainerSetup) -> None:
    """Own hostname, /etc/hosts and machine-id (never shared between clones)."""
    write_file(tree / "etc/hostname", setup.fqdn.split(".")[0] + "\n")
    write_file(tree / "etc/hosts", _hosts(setup.fqdn))
    write_file(tree / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)


def set_network(tree: Path, setup: ContainerSetup) -> None:
    netdir = tree / "etc/systemd/network"
    for old in netdir.glob("10-virtmix-*.network"):
        old.unlink()
    for iface in setup.interfaces:
        write_file(netdir / f"10-virtmix-{iface.name}.network", network_file(iface))
    if setup.nameservers:
        write_file(tree / "etc/resolv.conf", "# written by virtmix (inventory: dns)\n" +
                   "".join(f"nameserver {ns}\n" for ns in setup.nameservers))


def set_locale_time(tree: Path, setup: ContainerSetup) -> None:
    write_file(tree / "etc/default/locale", f"LANG={setup.locale}\n")
    if not setup.locale.startswith(("C.", "POSIX")) and setup.locale != "C":
        if not (tree / "usr/sbin/locale-gen").exists():
            raise RootfsError(
                f"container {setup.name} locale {setup.locale}: the tree has no locale-gen",
                hint="add 'locales' to the rootfs packages",
            )
        charset = setup.locale.split(".", 1)[1] if "." in setup.locale else "UTF-8"
        write_file(tree / "etc/locale.gen", f"{setup.locale} {charset}\n")
        run_in_tree(tree, ["locale-gen"])
    zone = tree / "usr/share/zoneinfo" / setup.timezone
    if not zone.exists() and setup.timezone not in ("Etc/UTC", "UTC"):
        raise RootfsError(
            f"container {setup.name} timezone {setup.timezone}: not in the tree's zoneinfo",
            hint="add 'tzdata' to the rootfs packages",
        )
    write_file(tree / "etc/timezone", setup.timezone + "\n")
    link = tree / "etc/localtime"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(f"/usr/share/zoneinfo/{setup.timezone}")


def _set_root_shadow(tree: Path, field: str) -> None:
    shadow = tree / "etc/shadow"
    lines = shadow.read_text().splitlines()
    out = []
    for line in lines:
        parts = line.split(":")
        if parts[0] == "root":
            parts[1] = field
        out.append(":".join(parts))
    st = os.lstat(shadow)
    tmp = shadow.with_name("shadow.virtmix-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(out) + "\n")
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, shadow)


def set_credentials(tree: Path, setup: ContainerSetup, password_file: Path) -> str | None:
    """Lock root unless keys or a generated password are asked for; returns the password.

    The password is written only to password_file (mode 0600, created that way, so it is
    never readable by others even for an instant) and returned to be shown once.
    """
    ssh = tree / "root/.ssh"
    if setup.ssh_keys:
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(ssh, 0o700)
        write_file(ssh / "authorized_keys", "\n".join(k.strip() for k in setup.ssh_keys) + "\n",
                   0o600)
    if setup.root_password != "generate":
        # "!*": locked and no password at all; key logins (sshd) still work.
        _set_root_shadow(tree, "!*")
        return None
    password = generate_password()
    res = subprocess.run(["chpasswd", "--root", str(tree), "--crypt-method", "SHA512"],
                         input=f"root:{password}\n".encode(), capture_output=True, check=False)
    if res.returncode != 0:
        raise RootfsError(f"chpasswd in {tree} failed: {res.stderr.decode(errors='replace')}")
    write_atomic(password_file, (password + "\n").encode(), mode=0o600)
    return password


def set_ssh_host_keys(tree: Path, setup: ContainerSetup) -> None:
    """Fresh host keys for this clone (the base has none, see base_setup)."""
    if not (tree / "usr/sbin/sshd").exists():
        if setup.sshd:
            raise RootfsError(f"container {setup.name}: sshd asked but not in the tree")
        return
    for t in _HOST_KEY_TYPES:
        key = tree / f"etc/ssh/ssh_host_{t}_key"
        for p in (key, key.with_name(key.name + ".pub")):
            p.unlink(missing_ok=True)
        res = subprocess.run(["ssh-keygen", "-q", "-t", t, "-N", "", "-C",
                              f"root@{setup.fqdn}", "-f", str(key)],
                             capture_output=True, check=False)
        if res.returncode != 0:
            raise RootfsError(f"ssh-keygen for {key}: {res.stderr.decode(errors='replace')}")
    if not setup.sshd:
        _mask(tree, "ssh.service")


def _mask(tree: Path, unit: str) -> None:
    link = tree / "etc/systemd/system" / unit
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")


def customise(tree: Path, setup: ContainerSetup, password_file: Path) -> str | None:
    """Every per-container step; returns a generated root password or None."""
    set_identity(tree, setup)
    set_network(tree, setup)
    set_locale_time(tree, setup)
    set_ssh_host_keys(tree, setup)
    set_cloud_seed(tree, setup)
    return set_credentials(tree, setup, password_file)


def set_cloud_seed(tree: Path, setup: ContainerSetup) -> None:
    """cloud-init's NoCloud seed, in a tree that has cloud-init (others ignore it)."""
    from virtmix.rootfs.cloudinit import has_cloud_init, write_seed_dir

    if setup.cloud_seed and has_cloud_init(tree):
        write_seed_dir(tree, dict(setup.cloud_seed))
