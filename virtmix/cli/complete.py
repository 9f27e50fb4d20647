"""Shell completion that answers before the command modules load (under 200 ms).

typer's completion imports the whole app (every command module, pydantic models, jinja2:
~250 ms before a name is listed). For the words admins complete most, main() asks
`fast_complete()` first: it reads the completion environment of typer's bash, zsh and fish
scripts, finds the verb and the argument being completed, and prints domain names (every
connection in use: -c, else both local drivers or $LIBVIRT_DEFAULT_URI, plus the inventory's
hosts), GUEST/NAME addresses and host names (from -i or $VIRTMIX_INVENTORY, read as plain
YAML), profile names or cgroup keys, in the shell's format. Anything else falls through to
typer, whose parameters use the same functions (`autocompletion=`).
"""

from __future__ import annotations

import os
import shlex
import sys
from functools import cache
from pathlib import Path

# Verbs whose positional arguments are domain names (NAME or GUEST/NAME).
NAME_VERBS = {"info", "start", "stop", "freeze", "unfreeze", "console", "cgroup", "ps",
              "attach", "destroy"}
# Global options before the verb that take a value.
_GLOBAL_VALUED = {"-c", "--connect", "-i", "--inventory"}
# Options of the verbs that take a value (the next word is not a positional argument).
_VALUED = {"-o", "--output", "--host", "--profile", "-n", "--name", "--rootfs", "--out",
           "--lock-timeout", "-j", "--jobs", "--listen", "--timeout", "--interval"}
LOCAL_URIS = ("lxc:///system", "qemu:///system")


# -- where names come from (cached: one look-up per completion call) ---------------------
@cache
def inventory_doc(path: str | None) -> dict:
    """The inventory as plain YAML (no validation: a half-edited file still completes)."""
    if not path:
        return {}
    try:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(path) as fh:
            doc = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    except Exception:  # noqa: BLE001 - a broken file must never fail a TAB
        return {}
    return doc if isinstance(doc, dict) else {}


def _hosts(doc: dict) -> dict:
    hosts = doc.get("hosts")
    return hosts if isinstance(hosts, dict) else {}


def host_names(inventory: str | None) -> list[str]:
    return sorted(str(h) for h in _hosts(inventory_doc(inventory)))


def nested_addresses(inventory: str | None) -> list[str]:
    """GUEST/NAME of every container the inventory nests in a guest."""
    out = []
    for host in _hosts(inventory_doc(inventory)).values():
        guests = host.get("guests") if isinstance(host, dict) else None
        for gname, guest in (guests or {}).items():
            for cname in ((guest or {}).get("containers") or {}) if isinstance(guest, dict) \
                    else ():
                out.append(f"{gname}/{cname}")
    return sorted(out)


def inventory_uris(inventory: str | None) -> list[str]:
    uris = []
    for host in _hosts(inventory_doc(inventory)).values():
        if isinstance(host, dict):
            uris += [u for u in (host.get("uri"), host.get("lxc_uri") or "lxc:///system")
                     if isinstance(u, str)]
    return uris


def connection_uris(connect: str | None, inventory: str | None) -> list[str]:
    """The connections the admin verbs would use (virtmix.admin.targets.Session.places)."""
    if connect:
        return [connect]
    env = os.environ.get("LIBVIRT_DEFAULT_URI")
    return list(dict.fromkeys(([env] if env else list(LOCAL_URIS)) + inventory_uris(inventory)))


@cache
def domain_names(connect: str | None, inventory: str | None) -> list[str]:
    from virtmix.backend.quick import domain_names as names_of

    # A daemon busy with a domain (an LXC destroy holds its lock ~2 s, and listAllDomains
    # waits for it) must not freeze the shell: what answered in time is offered.
    try:
        timeout = float(os.environ.get("VIRTMIX_COMPLETE_TIMEOUT", "0.15"))
    except ValueError:
        timeout = 0.15
    found = names_of(connection_uris(connect, inventory), timeout=timeout)
    names = {n for names in found.values() for n in names}
    return sorted(names) + nested_addresses(inventory)


def profile_names(inventory: str | None) -> list[str]:
    from virtmix.util import paths

    dirs = [paths.profiles_dir()]
    extra = inventory_doc(inventory).get("profiles_dir")
    if isinstance(extra, str) and inventory:
        dirs.append(Path(inventory).parent / extra)
    names = set()
    for d in dirs:
        for pattern in ("*.yaml", "*.yml"):
            names |= {p.stem for p in d.glob(pattern)}
    return sorted(names)


def cgroup_keys() -> list[str]:
    from virtmix.inventory.cgroups import CGROUP_KEYS

    return list(CGROUP_KEYS)


# -- the fast path -----------------------------------------------------------------------
def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # an open quote while typing
        return line.split()


def completion_args(env: dict[str, str], shell: str) -> tuple[list[str], str] | None:
    """(words after the program name before the one completed, the incomplete word), as
    typer's completion classes read them."""
    if shell == "bash":
        words = _split(env.get("COMP_WORDS", ""))
        try:
            cword = int(env.get("COMP_CWORD", ""))
        except ValueError:
            return None
        return words[1:cword], (words[cword] if cword < len(words) else "")
    if shell in ("zsh", "fish"):
        line = env.get("_TYPER_COMPLETE_ARGS", "")
        words = _split(line)[1:]
        if words and not line.endswith(" "):
            return words[:-1], words[-1]
        return words, ""
    return None


def candidates(args: list[str], incomplete: str, env: dict[str, str]) -> list[str] | None:
    """What to offer, or None when this is not a word the fast path knows."""
    connect, inventory, verb, rest = None, env.get("VIRTMIX_INVENTORY"), None, []
    i = 0
    while i < len(args):
        word = args[i]
        if verb is None and word in _GLOBAL_VALUED and i + 1 < len(args):
            if word in ("-c", "--connect"):
                connect = args[i + 1]
            else:
                inventory = args[i + 1]
            i += 2
            continue
        if verb is None and word.startswith("--connect="):
            connect = word.split("=", 1)[1]
        elif verb is None and word.startswith("--inventory="):
            inventory = word.split("=", 1)[1]
        elif verb is None and not word.startswith("-"):
            verb = word
        elif verb is not None:
            rest.append(word)
        i += 1
    if verb is None or incomplete.startswith("-"):
        return None
    first = next((w for w in rest if not w.startswith("-")), "")
    if verb in ("render", "plan", "apply", "explain", "validate", "metrics", "watch") and \
            first.endswith((".yaml", ".yml")):
        inventory = first  # the verb's own INVENTORY argument names the hosts
    if rest and rest[-1] == "--host":
        return _match(host_names(inventory), incomplete)
    if rest and rest[-1] == "--profile":
        return _match(profile_names(inventory), incomplete)
    if rest and rest[-1] in _VALUED:
        return None  # the value of some other option: typer's (or the shell's) job
    positional = [w for n, w in enumerate(rest)
                  if not w.startswith("-") and not (n and rest[n - 1] in _VALUED)]
    if verb == "cgroup" and len(positional) == 1:
        return _match(cgroup_keys(), incomplete)
    if verb in NAME_VERBS and (not positional or verb in ("ps", "destroy")):
        if verb == "destroy" and positional and positional[0].endswith((".yaml", ".yml")):
            return None
        return _match(domain_names(connect, inventory), incomplete)
    return None


def _format(shell: str, words: list[str]) -> str:
    if shell == "zsh":
        if not words:
            return "_files"
        esc = [w.replace('"', '""').replace("'", "''").replace("$", "\\$")
               .replace("`", "\\`").replace(":", r"\\:") for w in words]
        return "_arguments '*: :((" + "\n".join(f'"{w}"' for w in esc) + "))'"
    return "\n".join(words)


def fast_complete(prog: str = "virtmix") -> bool:
    """Answer a completion request from typer's shell script; False: let typer do it."""
    env = os.environ
    instruction = env.get(f"_{prog.upper().replace('-', '_')}_COMPLETE", "")
    shell = instruction.partition("_")[2]
    if not instruction.startswith("complete_") or shell not in ("bash", "zsh", "fish"):
        return False  # source_* (printing the script) and other shells: typer's job
    parsed = completion_args(dict(env), shell)
    if parsed is None:
        return False
    words = candidates(*parsed, dict(env))
    if words is None:
        return False
    if shell == "fish" and env.get("_TYPER_COMPLETE_FISH_ACTION") == "is-args":
        sys.exit(0 if words else 1)
    sys.stdout.write(_format(shell, words) + ("\n" if words and shell != "zsh" else ""))
    return True


def _match(words: list[str], incomplete: str) -> list[str]:
    return [w for w in words if w.startswith(incomplete)]


__all__ = ["candidates", "cgroup_keys", "domain_names", "fast_complete", "host_names",
           "profile_names"]
