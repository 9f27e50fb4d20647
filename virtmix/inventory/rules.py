"""The inventory's rules for words that become names, paths and configuration: one each.

The model (inventory.model) applies them when an inventory or a `virtmix create` request is
validated, so bad input is refused at the edge, naming the key. The rootfs code applies the
same functions to what reaches it by its own CLI (`virtmix rootfs build`), never a rule of
its own. Each raises ValueError with what was expected.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from virtmix.inventory import strings

# Names become libvirt domain names, file names under the storage directory and hostnames:
# one conservative rule for all of them.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Variant = Literal["minbase", "buildd", "required", "important", "standard"]
VARIANTS: tuple[str, ...] = get_args(Variant)  # mmdebstrap's and debootstrap's in common

SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$")


def check_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a name must be a string, got {strings.shown(value)}")
    if len(value) > 64:
        raise ValueError(f"name {strings.shown(value)} is longer than 64 characters")
    if ".." in value or not NAME_RE.fullmatch(value):  # fullmatch: `$` allows a final \n
        raise ValueError(
            f"unsafe name {strings.shown(value)}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, no '..', at most 64 characters"
        )
    return value


def check_variant(value: str) -> str:
    if value not in VARIANTS:
        raise ValueError(f"variant {value!r}: expected one of {', '.join(VARIANTS)}")
    return value


# The string rules (inventory/strings.py) are the stricter ones for untrusted text.
check_suite = strings.check_suite
check_word = strings.check_word          # a component or architecture name
check_package = strings.check_package    # Debian's package syntax, never a leading '-'
check_ssh_key = strings.check_ssh_key    # one valid public key
check_locale = strings.check_locale      # a name, never a path
check_timezone = strings.check_timezone  # a name, never a path


def check_hostname(value: str) -> str:
    if not HOSTNAME_RE.match(value):
        raise ValueError("not a hostname (letters, digits and '-', dot-separated labels of "
                         "at most 63 characters)")
    return value


def check_ifname(value: str) -> str:
    if not IFNAME_RE.fullmatch(value):
        raise ValueError("not a Linux interface name (at most 15 letters, "
                         "digits, '_', '-' or '.'; no '/' or blanks)")
    return value

