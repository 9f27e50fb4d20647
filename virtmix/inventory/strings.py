"""Checks for inventory strings that reach XML, file names, /etc files in a tree, apt sources,
ssh or mmdebstrap arguments: pure functions that raise ValueError (pydantic reports them
with the key path; load.py adds file and line).

The inventory is untrusted during validate/render/plan (SECURITY.md): every such string is
refused at load, so that `validate` refuses what `apply` would, and nothing later has to
guess whether a value is safe to pass on.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from typing import Any

# Unicode line and paragraph separators and the bidi overrides ("Trojan source") are not
# category Cc but change how a line reads or splits; refused with the control characters.
_INVISIBLE = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def shown(value: Any, limit: int = 60) -> str:
    """A value as it goes into a message: repr, cut short (a hostile value may be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def control_character(text: str, *, allow_newlines: bool = False) -> str | None:
    """The first control character in `text` as a readable escape, or None."""
    if text.isprintable():  # fast path: no Cc/Cf/Zl/Zp/... at all
        return None
    for ch in text:
        if allow_newlines and ch in "\n\t":
            continue
        if ch in _INVISIBLE or unicodedata.category(ch) in ("Cc", "Cs"):
            return repr(ch)[1:-1] if ch not in _INVISIBLE else f"\\u{ord(ch):04x}"
    return None


def no_control(value: Any) -> Any:
    """Refuse a string with control characters (a trailing newline in a name included)."""
    if isinstance(value, str):
        bad = control_character(value)
        if bad:
            raise ValueError(f"contains a control character ({bad})")
    return value


# A mirror is a plain URL: apt options such as `[trusted=yes]` would turn signature checks
# off, and blanks would add suites or components to the sources line.
_MIRROR = re.compile(r"^(?:https?|file)://[^\s\[\]\"'\\<>]+\Z", re.IGNORECASE)


def check_mirror(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, str) or not _MIRROR.match(value):
        raise ValueError("a mirror is a plain http://, https:// or file:// URL (e.g. "
                         "http://deb.example.org/debian), with no apt options such as "
                         "[trusted=yes]: signature checks always stay on")
    return value


# One OpenSSH public key: TYPE BASE64 [COMMENT]. No options prefix (command=...,
# from=...): a key that runs a command or lifts restrictions is not a plain key.
_KEY_TYPES = frozenset({
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ssh-ed448",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com", "sk-ssh-ed25519@openssh.com",
    "ssh-rsa-cert-v01@openssh.com", "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
})
MAX_KEY_LENGTH = 16384


def check_ssh_key(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("an ssh key is one line 'TYPE BASE64 [COMMENT]'")
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"an ssh public key is at most {MAX_KEY_LENGTH} characters")
    bad = control_character(value)
    if bad:
        raise ValueError(f"an ssh key is one line (contains {bad}); give one key per item")
    parts = value.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise ValueError("not an ssh public key: expected 'TYPE BASE64 [COMMENT]' with TYPE "
                         "such as ssh-ed25519 or ssh-rsa (no options such as command=)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not an ssh public key: its key part is not base64") from None
    # The blob starts with the key type again (RFC 4253 string: 4-byte length + name).
    if len(blob) < 4 or blob[4:4 + int.from_bytes(blob[:4], "big")] != parts[0].encode():
        raise ValueError(f"not an ssh public key: its data is not a {parts[0]} key")
    return value


_LOCALE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9-]+)?(?:@[A-Za-z0-9]+)?\Z")
_TIMEZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9][A-Za-z0-9_+-]*){0,2}\Z")


def check_locale(value: Any) -> Any:
    if not isinstance(value, str) or len(value) > 64 or not _LOCALE.match(value):
        raise ValueError("a locale is a name such as C.UTF-8 or en_GB.UTF-8, not a path")
    return value


def check_timezone(value: Any) -> Any:
    if not isinstance(value, str) or len(value) > 64 or not _TIMEZONE.match(value):
        raise ValueError("a timezone is a zoneinfo name such as Etc/UTC or Europe/Paris "
                         "(no '..', no leading '/')")
    return value


# Debian policy 5.6.1: lowercase letters, digits, + - . ; at least two characters, starting
# with a letter or digit. An optional :ARCH and a =VERSION or /SUITE, as apt accepts.
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+|/[a-z0-9-]+)?\Z")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{0,63}\Z")
_WORD = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,63}\Z")


def check_package(value: Any) -> Any:
    if not isinstance(value, str) or len(value) > 200 or not _PACKAGE.match(value):
        raise ValueError("not a Debian package name (lowercase letters, digits, '+', '-', "
                         "'.'; at least 2 characters, starting with a letter or digit)")
    return value


def check_suite(value: Any) -> Any:
    if not isinstance(value, str) or not _SUITE.match(value):
        raise ValueError("a suite is a name such as bookworm or trixie")
    return value


def check_word(value: Any) -> Any:
    """An apt component or a dpkg architecture: one lowercase word."""
    if not isinstance(value, str) or not _WORD.match(value):
        raise ValueError("expected one lowercase word (letters, digits, '_', '.', '+', '-')")
    return value


def check_abs_path(value: Any) -> Any:
    """A host path: absolute, no control characters, no '..' component."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {value!r}")
    no_control(value)
    if ".." in value.split("/"):
        raise ValueError("a path may not contain '..'")
    return value


# Directories whose contents the host depends on: virtmix's storage never lives there (it
# creates, chowns and deletes trees under storage_dir).
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
    "/usr", "/var", "/var/lib", "/var/tmp", "/var/log", "/var/run", "/usr/local",
    "/var/cache", "/var/spool", "/usr/lib", "/usr/bin", "/usr/sbin", "/usr/share",
})


def is_system_dir(path: str) -> bool:
    """`/`, a top-level system directory, or one of the shared /var and /usr ones."""
    norm = "/" + "/".join(p for p in path.split("/") if p and p != ".")
    return norm in SYSTEM_DIRS


def check_storage_dir(value: Any) -> Any:
    check_abs_path(value)
    if is_system_dir(value):
        raise ValueError(f"storage_dir {value!r} is a system directory: virtmix creates, "
                         "chowns and deletes trees there; use e.g. /var/lib/virtmix")
    return value
