"""SSH trust between the host and its guests: the site key, per-guest host keys, known_hosts.

virtmix never accepts a host key it has not made itself: each guest's host key is generated
on the host before the guest first boots, handed to the guest on its config disk, and
pinned in virtmix's own known_hosts. Every ssh that virtmix starts (libvirt's ssh
transport included, through `command=`) reads virtmix's own ssh config, which trusts only
that file and fails rather than prompting.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from virtmix.errors import BackendError, RootfsError
from virtmix.hosts.ssh import run_argv
from virtmix.rootfs.storage import Storage
from virtmix.util.files import make_dir, write_atomic
from virtmix.util.uris import is_ssh_uri

KEY_NAME = "id_ed25519"
EXTRA_KEYS = "authorized_keys.extra"  # an admin's own public keys, installed in every guest


def ssh_dir(storage: Storage) -> Path:
    """root/ssh (0700, made here): the site's private key, pins and ssh config."""
    d = storage.root / "ssh"
    make_dir(d, 0o700)
    return d


def _keygen(path: Path, comment: str) -> None:
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                        "-f", str(path)], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RootfsError("ssh-keygen not found", hint="apt-get install openssh-client") from None
    except subprocess.CalledProcessError as e:
        raise RootfsError(f"ssh-keygen {path} failed: {e.stderr.strip()}") from None


def site_key(storage: Storage) -> Path:
    """virtmix's private key for its guests (made once; an admin may put their own there)."""
    key = ssh_dir(storage) / KEY_NAME
    if key.is_file():
        return key
    # Two first runs on one storage at once (two applies, or a test suite on two workers)
    # must not both run ssh-keygen on one path: it asks whether to overwrite, and a half
    # written pair would be trusted. One makes it aside, the pair is renamed into place.
    with storage.lock("site-key"):
        if not key.is_file():
            new = key.with_name(f".{KEY_NAME}.new")
            new_pub = new.with_name(new.name + ".pub")
            for p in (new, new_pub):
                p.unlink(missing_ok=True)
            _keygen(new, f"virtmix@{os.uname().nodename}")
            # The public half first: the private key's presence says the pair is complete.
            write_atomic(key.with_suffix(".pub"), new_pub.read_bytes(), mode=0o644)
            write_atomic(key, new.read_bytes(), mode=0o600)
            for p in (new, new_pub):
                p.unlink()
    return key


def authorized_keys(storage: Storage) -> str:
    """What goes into a guest's /root/.ssh/authorized_keys: the site key, then extras."""
    lines = [(site_key(storage).with_suffix(".pub")).read_text().strip()]
    extra = ssh_dir(storage) / EXTRA_KEYS
    if extra.is_file():
        lines += [x.strip() for x in extra.read_text().splitlines()
                  if x.strip() and not x.startswith("#")]
    return "\n".join(lines) + "\n"


def make_host_key(dest: Path, name: str) -> str:
    """A new ed25519 host key at dest (private) and dest.pub; returns the public line."""
    for p in (dest, dest.with_name(dest.name + ".pub")):
        p.unlink(missing_ok=True)
    _keygen(dest, f"root@{name}")
    return dest.with_name(dest.name + ".pub").read_text().strip()


def known_hosts(storage: Storage) -> Path:
    path = ssh_dir(storage) / "known_hosts"
    if not path.exists():
        path.touch(mode=0o600)
    return path


def pin_host_key(storage: Storage, address: str, pub_line: str) -> None:
    """Make `address`'s only trusted key the given public key (replacing older pins)."""
    keytype, key = pub_line.split()[:2]
    wanted = f"{address} {keytype} {key}"
    with storage.lock("known-hosts"):  # apply opens guests' connections from threads
        path = known_hosts(storage)
        old = path.read_text().splitlines()
        if wanted in old and sum(x.split(" ", 1)[0] == address for x in old) == 1:
            return
        _write_known(path, [x for x in old if x.split(" ", 1)[0] != address] + [wanted])


def unpin_host_key(storage: Storage, address: str) -> None:
    with storage.lock("known-hosts"):
        path = known_hosts(storage)
        lines = path.read_text().splitlines()
        _write_known(path, [x for x in lines if x.split(" ", 1)[0] != address])


def unpin_key(storage: Storage, pub_line: str) -> None:
    """Forget every pin of one host key (a cloud-image guest's, whatever its address was)."""
    key = pub_line.split()[1]
    with storage.lock("known-hosts"):
        path = known_hosts(storage)
        lines = path.read_text().splitlines()
        kept = [x for x in lines if x.split()[2:3] != [key]]
        if kept != lines:
            _write_known(path, kept)


def _write_known(path: Path, lines: list[str]) -> None:
    write_atomic(path, "".join(x + "\n" for x in lines).encode(), mode=0o600)


def ssh_config(storage: Storage) -> Path:
    """virtmix's ssh client config and the `ssh` wrapper libvirt runs (command=)."""
    d = ssh_dir(storage)
    conf = d / "config"
    text = "\n".join([
        "# written by virtmix: trust only host keys virtmix pinned, never prompt",
        "Host *",
        f"  IdentityFile {site_key(storage)}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts(storage)}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        "  CheckHostIP no",
        "  BatchMode yes",
        "  ConnectTimeout 5",
        "  ServerAliveInterval 10",
        "  LogLevel ERROR",
        "",
    ])
    if not conf.is_file() or conf.read_text() != text:
        write_atomic(conf, text.encode(), mode=0o600)
    wrapper = d / "ssh"
    body = f"#!/bin/sh\nexec ssh -F {shlex.quote(str(conf))} \"$@\"\n"
    if not wrapper.is_file() or wrapper.read_text() != body:
        write_atomic(wrapper, body.encode(), mode=0o700)
    return conf


def ssh_argv(storage: Storage, address: str, user: str = "root") -> list[str]:
    """The ssh command line that reaches a guest with virtmix's key and pins.

    `--` ends ssh's options, and a host or user starting with "-" is refused: it would
    otherwise be read as an option such as -oProxyCommand=... (a command run as root).
    """
    if not address or address.startswith("-") or user.startswith("-"):
        raise BackendError(f"ssh: refusing host {address!r} (user {user!r}): it would be "
                           "read as an option")
    return ["ssh", "-F", str(ssh_config(storage)), "--", f"{user}@{address}"]


def transport_uri(storage: Storage, uri: str) -> str:
    """A `*+ssh://` URI with virtmix's ssh wrapper as its ssh command (unless one is set).

    libvirt's plain ssh transport has no known_hosts parameter (only libssh/libssh2 have);
    `command=` points it at a wrapper that runs ssh with virtmix's own config instead.
    """
    parts = urlsplit(uri)
    if not is_ssh_uri(uri):
        return uri
    query = dict(parse_qsl(parts.query))
    if "command" in query or "keyfile" in query:
        return uri  # the admin chose their own ssh setup
    ssh_config(storage)
    query.setdefault("command", str(ssh_dir(storage) / "ssh"))
    query.setdefault("no_tty", "1")
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="/")))


def run_ssh(storage: Storage, address: str, command: str, *, timeout: float = 60,
            input: str | bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell command in a guest over ssh; BackendError names the guest on failure."""
    return run_argv([*ssh_argv(storage, address), command], f"ssh root@{address}",
                    timeout=timeout, input=input, check=check)
