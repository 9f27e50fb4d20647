"""Where packages come from: the host's apt sources (default) or a configured mirror.

virtmix never names a mirror host itself. Without a `mirror` setting it reads the host's
apt sources, keeps the Debian entries (signed by a debian-archive keyring, or at a path
ending in /debian or /debian-security), and points them at the requested suite.
Signature checking always stays on: every line carries a keyring that must exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from virtmix.errors import RootfsError

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_ETC = Path("/etc/apt")
# Suites with no -updates / -security companions.
_ROLLING = {"sid", "unstable", "experimental", "rc-buggy"}


@dataclass(frozen=True)
class AptSource:
    """One host apt source entry (one URI)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None


@dataclass(frozen=True)
class Sources:
    """What the builder needs: sources lines, the main URI and keyring (for debootstrap)."""

    lines: tuple[str, ...]
    main_uri: str
    keyring: str


def _parse_deb822(text: str) -> list[AptSource]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(
                AptSource(uri, tuple(fields.get("suites", "").split()),
                          tuple(fields.get("components", "").split()),
                          fields.get("signed-by") or None)
            )
    return out


def _parse_one_line(text: str) -> list[AptSource]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m:
            continue
        opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
        out.append(AptSource(m.group(2), (m.group(3),), tuple(m.group(4).split()),
                             opts.get("signed-by")))
    return out


def host_sources(etc: Path = APT_ETC) -> list[AptSource]:
    """Every enabled `deb` entry of the host's apt configuration."""
    found: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        found += _parse_one_line(main.read_text())
    d = etc / "sources.list.d"
    if d.is_dir():
        for f in sorted(d.iterdir()):
            if f.suffix == ".list":
                found += _parse_one_line(f.read_text())
            elif f.suffix == ".sources":
                found += _parse_deb822(f.read_text())
    return found


def _is_debian(src: AptSource) -> bool:
    if src.signed_by:
        return "debian-archive" in src.signed_by
    return bool(re.search(r"/debian(-security)?/?$", src.uri))


def _keyring_for(signed_by: str | None, where: str) -> str:
    keyring = signed_by or DEBIAN_KEYRING
    if not Path(keyring).is_file():
        raise RootfsError(
            f"{where}: keyring {keyring} is missing; virtmix never builds without "
            "signature checking",
            hint="apt-get install debian-archive-keyring",
        )
    return keyring


def resolve_sources(suite: str, components: tuple[str, ...], mirror: str | None,
                    etc: Path = APT_ETC) -> Sources:
    """The apt lines for a build of suite, from the mirror setting or the host's sources."""
    comps = " ".join(components)
    if mirror:
        if mirror.startswith("deb "):  # a full line: the admin owns it (keyring included)
            m = re.match(r"^deb\s+(?:\[[^\]]*signed-by=([^\]\s]+)[^\]]*\]\s+)?(\S+)", mirror)
            if not m:
                raise RootfsError(f"rootfs mirror {mirror!r}: expected 'deb [opts] URI ...'")
            keyring = _keyring_for(m.group(1), f"rootfs mirror {mirror!r}")
            return Sources((mirror,), m.group(2), keyring)
        if "://" not in mirror:
            raise RootfsError(f"rootfs mirror {mirror!r}: expected a URI like http://HOST/debian")
        keyring = _keyring_for(None, f"rootfs mirror {mirror}")
        return Sources((f"deb [signed-by={keyring}] {mirror} {suite} {comps}",), mirror, keyring)

    debian = [s for s in host_sources(etc) if _is_debian(s)]
    main = [s for s in debian if any("-" not in x for x in s.suites)]
    if not main:
        raise RootfsError(
            f"{etc}/sources.list*: no Debian archive entry to build {suite} from",
            hint="set the rootfs mirror setting (a URI of a Debian mirror)",
        )
    base = main[0]
    keyring = _keyring_for(base.signed_by, f"{etc}/sources.list.d ({base.uri})")
    lines = [f"deb [signed-by={keyring}] {base.uri} {suite} {comps}"]
    if suite not in _ROLLING:
        if any(x.endswith("-updates") for x in base.suites):
            lines.append(f"deb [signed-by={keyring}] {base.uri} {suite}-updates {comps}")
        sec = [s for s in debian if any(x.endswith("-security") for x in s.suites)]
        if sec:
            sk = _keyring_for(sec[0].signed_by, f"{etc}/sources.list.d ({sec[0].uri})")
            lines.append(f"deb [signed-by={sk}] {sec[0].uri} {suite}-security {comps}")
    return Sources(tuple(lines), base.uri, keyring)
