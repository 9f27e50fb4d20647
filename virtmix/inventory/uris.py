"""libvirt connection URIs in an inventory: one canonical spelling, and the parts that run a
command refused unless the admin allows them.

libvirt reads `lxc:///` as `lxc:///system` and its scheme case-insensitively, so two entries
of one name under the two spellings would be the same domain: the canonical form (lower-case
scheme and host, the default path filled in) is what names are compared under. The `ext`
transport runs a program the URI names, and an ssh URI's `command=`, `socket=` and `netcat=`
parameters choose what runs (locally or on the remote side), and a host starting with `-`
reads as an option to ssh: an inventory is untrusted until apply (SECURITY.md), so these are
refused unless `--allow-uri-commands` is given.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

from virtmix.inventory.strings import control_character

# Set by the CLI's global --allow-uri-commands; load_site's argument overrides it.
ALLOW_URI_COMMANDS = False

_SSH_TRANSPORTS = frozenset({"ssh", "libssh", "libssh2"})
_COMMAND_PARAMS = frozenset({"command", "socket", "netcat"})
_DEFAULT_PATH = {"lxc": "/system", "qemu": "/system", "test": "/default"}


@lru_cache(maxsize=1024)
@lru_cache(maxsize=4096)  # called per entry on a handful of distinct URIs (urlsplit is slow)
def canonical(uri: str) -> str:
    """The spelling libvirt treats as the same daemon: `LXC:///` -> `lxc:///system`."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    scheme = parts.scheme.lower()
    driver = scheme.split("+", 1)[0]
    path = parts.path
    if path in ("", "/") and driver in _DEFAULT_PATH and driver != "test":
        path = _DEFAULT_PATH[driver]
    netloc = parts.netloc.lower() if "@" not in parts.netloc else \
        parts.netloc.rsplit("@", 1)[0] + "@" + parts.netloc.rsplit("@", 1)[1].lower()
    out = f"{scheme}://{netloc}{path}"
    if parts.query:
        out += f"?{parts.query}"
    return out


def transport(uri: str) -> str:
    scheme = uri.split(":", 1)[0].lower()
    return scheme.split("+", 1)[1] if "+" in scheme else ""


def check_uri(uri: object, allow_commands: bool | None = None,
              allow_ext: bool | None = None) -> str:
    """Refuse a URI that is not one, or (unless allowed) one that runs a chosen command.

    `allow_ext`: the `ext` transport only runs its command when virtmix connects, so the
    verbs that never connect (validate, render, explain) accept it with a warning
    (sitechecks); the others refuse it unless `allow_commands`."""
    if not isinstance(uri, str):
        raise ValueError("a libvirt URI is a string such as qemu:///system")
    bad = control_character(uri)
    if bad:
        raise ValueError(f"contains a control character ({bad})")
    if len(uri) > 1024 or "://" not in uri or " " in uri:
        raise ValueError(f"not a libvirt URI: {uri!r} (e.g. lxc:///system, "
                         "qemu+ssh://root@HOST/system)")
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        params = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ValueError(f"not a libvirt URI: {uri!r} ({exc})") from None
    allowed = ALLOW_URI_COMMANDS if allow_commands is None else allow_commands
    if allowed:
        return uri
    how = transport(uri)
    if how == "ext" and not allow_ext:
        raise ValueError("the 'ext' transport runs a command named in the URI; refused "
                         "unless virtmix is run with --allow-uri-commands")
    if host.startswith("-") or parts.netloc.startswith("-") or \
            parts.netloc.split("@")[-1].startswith("-"):
        raise ValueError("a host starting with '-' would read as an ssh option; refused "
                         "unless virtmix is run with --allow-uri-commands")
    if how in _SSH_TRANSPORTS:
        chosen = sorted({k.lower() for k, _v in params} & _COMMAND_PARAMS)
        if chosen:
            raise ValueError(f"the ssh URI parameter {chosen[0]}= chooses a command to run; "
                             "refused unless virtmix is run with --allow-uri-commands")
    return uri
