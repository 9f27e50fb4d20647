"""The inventory's rules for words that become names, paths and configuration: one each.

The model (inventory.model) applies them when an inventory or a `virtmix create` request is
validated, so bad input is refused at the edge, naming the key. The rootfs code applies the
same functions to what reaches it by its own CLI (`virtmix rootfs build`), never a rule of
its own. Each raises ValueError with what was expected.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

# Names become libvirt domain names, file names under the storage directory and hostnames:
# one conservative rule for all of them.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Variant = Literal["minbase", "buildd", "required", "important", "standard"]
VARIANTS: tuple[str, ...] = get_args(Variant)  # mmdebstrap's and debootstrap's in common

SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
WORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a Debian package/component/arch
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")
SSH_KEY_RE = re.compile(r"^(ssh-|ecdsa-|sk-)\S+ \S+")
LOCALE_RE = re.compile(r"^[A-Za-z0-9_.@-]+$")
TIMEZONE_RE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$")


def check_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a name must be a string, got {value!r}")
    if len(value) > 64:
        raise ValueError(f"name {value!r} is longer than 64 characters")
    if ".." in value or not NAME_RE.match(value):
        raise ValueError(
            f"unsafe name {value!r}: use letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, no '..', at most 64 characters"
        )
    return value


def check_variant(value: str) -> str:
    if value not in VARIANTS:
        raise ValueError(f"variant {value!r}: expected one of {', '.join(VARIANTS)}")
    return value


def check_suite(value: str) -> str:
    if not SUITE_RE.match(value):
        raise ValueError(f"suite {value!r}: expected a Debian suite such as bookworm")
    return value


def check_word(value: str) -> str:
    """A package, component or architecture name (no blanks, no shell characters)."""
    if not WORD_RE.match(value):
        raise ValueError(f"{value!r}: expected letters, digits and _.+- only")
    return value


def check_hostname(value: str) -> str:
    if not HOSTNAME_RE.match(value):
        raise ValueError(f"hostname {value!r}: not a valid hostname")
    return value


def check_ssh_key(value: str) -> str:
    if "\n" in value or not SSH_KEY_RE.match(value.strip()):
        raise ValueError(f"not an SSH public key: {value!r}")
    return value


def check_ifname(value: str) -> str:
    if not IFNAME_RE.match(value):
        raise ValueError("not a Linux interface name (at most 15 letters, "
                         "digits, '_', '-' or '.'; no '/' or blanks)")
    return value


def check_locale(value: str) -> str:
    if not LOCALE_RE.match(value):
        raise ValueError(f"locale {value!r}: e.g. C.UTF-8")
    return value


def check_timezone(value: str) -> str:
    if not TIMEZONE_RE.match(value):
        raise ValueError(f"timezone {value!r}: e.g. Etc/UTC")
    return value
