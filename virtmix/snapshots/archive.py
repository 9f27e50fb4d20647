"""`virtmix backup` / `virtmix restore`: one self-describing tar archive per domain.

    manifest.json   format, version, name, kind, uuid, state, virtmix metadata, contents
    domain.xml      the persistent definition
    rootfs/...      a container's whole tree (numeric owners, xattrs, file capabilities)
    files/NAME      a guest's disks (flattened to standalone qcow2), kernel, initrd

The manifest comes first, so `restore` reads it without unpacking the rest. A container
is frozen while its tree is archived and a guest while its disks are flattened (qemu-img
reads the disk under qemu's lock with -U; the guest is paused so nothing changes under it).
An archive is written under a hidden name, synced and renamed, so a killed backup never
leaves something that looks like an archive. Restore unpacks into a hidden directory
renamed into place; it keeps the domain's UUID and MACs unless told otherwise, and on
another host the paths of the archived definition are rewritten to that host's storage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from virtmix.admin.targets import Session, Target
from virtmix.errors import ConflictError, NotFoundError, RootfsError, UsageError
from virtmix.rootfs.storage import CONTAINER_MARKER, Storage
from virtmix.snapshots import trees
from virtmix.util.layout import GUEST_FILES_MARKER, guest_path

FORMAT = "virtmix-backup"
VERSION = 1
SUFFIX = ".vmxbak.tar"


@dataclass
class Made:
    path: Path
    size_mib: float
    seconds: float


@dataclass
class Restored:
    name: str
    uri: str
    state: str
    notes: list[str] = field(default_factory=list)


def _run(argv: list[str], what: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RootfsError(f"{what} failed: {res.stderr.strip()[-400:]}")


def _guest_files(tree: Any) -> list[tuple[str, Path]]:
    """(archive name, host path) of a guest's file-backed disks, kernel and initrd."""
    files = []
    for i, disk in enumerate(tree.iterfind("devices/disk")):
        src = disk.find("source")
        if disk.get("type") != "file" or src is None or not src.get("file"):
            continue
        files.append((f"disk{i}-{Path(src.get('file')).name}", Path(src.get("file"))))
    for tag in ("kernel", "initrd"):
        p = tree.findtext(f"os/{tag}")
        if p:
            files.append((f"{tag}-{Path(p).name}", Path(p)))
    return files


def backup(target: Target, to: Path) -> Made:
    from virtmix.hosts import is_local
    from virtmix.snapshots.ops import frozen

    if not is_local(target.place.uri):
        raise UsageError(f"backup: {target.address} is on {target.place.uri}; backups are "
                         "taken on the host the domain runs on")
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    final = to / f"{target.name}-{stamp}{SUFFIX}"
    if final.exists():
        raise ConflictError(f"{final} exists already")
    began = time.monotonic()
    tree = target.record.tree
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "name": target.name, "kind": target.record.kind,
        "uuid": target.record.uuid, "state": target.record.state, "uri": target.place.uri,
        "metadata": target.record.metadata, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    part = to / f".{final.name}.part-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix=".vmx-backup-", dir=to) as meta_dir:
        meta = Path(meta_dir)
        (meta / "domain.xml").write_text(target.record.xml)
        try:
            with frozen([target]):
                if target.record.kind == "lxc":
                    root = trees.root_source(tree)
                    if not root or not Path(root).is_dir():
                        raise NotFoundError(f"backup: the tree of {target.address} ({root}) "
                                            "is not there")
                    manifest["contents"] = {"rootfs": "rootfs/", "tree": root}
                    (meta / "manifest.json").write_text(json.dumps(manifest, indent=2))
                    _run(["tar", "-C", str(meta), "-cf", str(part), "--format=posix",
                          "manifest.json", "domain.xml",
                          "-C", root, "--numeric-owner", "--xattrs", "--xattrs-include=*",
                          "--acls", "--sparse", "--transform", r"s,^\.,rootfs,", "."],
                         f"archiving {root}")
                else:
                    names = _flatten_guest_files(tree, meta)
                    manifest["contents"] = {"files": names}
                    (meta / "manifest.json").write_text(json.dumps(manifest, indent=2))
                    _run(["tar", "-C", str(meta), "-cf", str(part), "--format=posix",
                          "--sparse", "manifest.json", "domain.xml",
                          *[f"files/{n}" for n in names]], "archiving the guest's files")
            with open(part, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(part, 0o600)  # it holds a whole system: shadow, keys
            os.rename(part, final)
            dfd = os.open(to, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise
    return Made(final, final.stat().st_size / 2**20, time.monotonic() - began)


def _flatten_guest_files(tree: Any, meta: Path) -> list[str]:
    (meta / "files").mkdir()
    names = []
    for name, src in _guest_files(tree):
        dest = meta / "files" / name
        if name.startswith("disk"):
            # -U: qemu holds the image's lock while the (paused) guest exists.
            _run(["qemu-img", "convert", "-U", "-O", "qcow2", str(src), str(dest)],
                 f"flattening {src}")
        else:
            shutil.copy2(src, dest)
        names.append(name)
    return names


def read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NotFoundError(f"{path}: no such archive")
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != "manifest.json":
                raise UsageError(f"{path}: not a virtmix backup (no manifest.json first)")
            f = tar.extractfile(first)
            assert f is not None
            data = json.loads(f.read(1 << 20))
    except (tarfile.TarError, ValueError, OSError) as exc:
        raise UsageError(f"{path}: not a readable virtmix backup ({exc})") from None
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise UsageError(f"{path}: format {data.get('format')} version {data.get('version')}; "
                         f"expected {FORMAT} version {VERSION}")
    return data


def restore_uri(session: Session, path: Path, host: str | None,
                connect: str | None) -> tuple[str, str | None]:
    """Where to restore: --host (an inventory host: its URI, and the site's storage_dir
    for the tree or disks), else -c, else the local driver (and the archive's storage)."""
    manifest = read_manifest(path)
    lxc = manifest["kind"] == "lxc"
    if host:
        site = session.site
        if site is None:
            raise UsageError("--host names an inventory host: give the inventory with -i")
        h = site.inventory.hosts.get(host)
        if h is None:
            raise NotFoundError(f"no host named {host!r} in {site.path}",
                                hint="hosts: " + ", ".join(site.inventory.hosts))
        return (h.lxc_uri if lxc else h.uri), site.inventory.settings.storage_dir
    return connect or ("lxc:///system" if lxc else "qemu:///system"), None


def restore(session: Session, path: Path, uri: str, *, name: str | None,
            new_identity: bool, storage_dir: str | None = None,
            host: str | None = None) -> Restored:
    """Define (and start, if it was running) the archived domain on `uri`.

    A local URI unpacks here; an ssh URI (another host) streams the archive to that host
    over ssh, where tar unpacks it (nothing is unpacked on this machine). The tree or
    disks go to storage_dir's layout (the inventory's, with --host), else to where the
    archive's site kept them.
    """
    from virtmix.admin.targets import Place, host_of
    from virtmix.hosts import is_local, is_ssh_uri

    manifest = read_manifest(path)
    name = name or manifest["name"]
    remote = not is_local(uri)
    if remote and not is_ssh_uri(uri):
        raise UsageError(f"restore: {uri} is neither this machine nor reached over ssh; "
                         "virtmix copies the archive to another host over ssh only",
                         hint="use a qemu+ssh:// or lxc+ssh:// URI for that host")
    conn = session.conn(Place(uri, host or host_of(uri)))
    try:
        conn.get(name)
        raise ConflictError(f"restore: a domain named {name!r} exists on {uri}",
                            hint="destroy it first, or restore under another --name")
    except NotFoundError:
        pass
    storage = Storage(storage_dir) if storage_dir else _storage_of(manifest)
    xml = _read_member(path, "domain.xml").decode()
    tree = etree.fromstring(xml.encode())
    notes = []
    via = SshUnpack(uri) if remote else None
    if manifest["kind"] == "lxc":
        _unpack_container(path, storage, name, tree, manifest, via)
    else:
        _unpack_guest(path, storage, name, tree, manifest, via)
    tree.find("name").text = name
    _record_host(tree, host, manifest, notes)
    if new_identity or name != manifest["name"]:
        for node in [tree.find("uuid"), *tree.iterfind("devices/interface/mac")]:
            if node is not None:
                node.getparent().remove(node)
        notes.append("new UUID and MAC addresses (libvirt chooses them)")
    if name != manifest["name"]:
        # Under another name it is no inventory entry: virtmix's metadata would make plan
        # call it an orphan of the site. It is foreign until an inventory adopts it.
        meta = tree.find("metadata")
        if meta is not None:
            tree.remove(meta)
            notes.append(f"{name} is not managed by any inventory now (add it and "
                         "`virtmix apply --adopt` to manage it)")
    conn.define(etree.tostring(tree, encoding="unicode"))
    state = "shutoff"
    if manifest.get("state") in ("running", "blocked", "paused"):
        conn.start(name)
        state = conn.get(name).state
    return Restored(name, uri, state, notes)


def _storage_of(manifest: dict[str, Any]) -> Storage:
    """Where the restored tree or disks go: the storage of the site that managed the domain
    (its inventory, when this host has it), else the storage a virtmix-built tree lived in,
    else the default storage."""
    from virtmix.snapshots.ops import site_storage

    inv = (manifest.get("metadata") or {}).get("inventory")
    if inv and (found := site_storage(inv)) is not None:
        return found
    tree = (manifest.get("contents") or {}).get("tree")
    if tree and Path(tree).name == "rootfs" and Path(tree).parent.parent.name == "containers":
        return Storage(Path(tree).parent.parent.parent)
    return Storage()


def _read_member(path: Path, member: str) -> bytes:
    with tarfile.open(path, "r:") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise UsageError(f"{path}: has no {member}")
        return f.read()


class SshUnpack:
    """Unpacking on another host: the archive is streamed to a shell script there over
    ssh (hosts.ssh.SshHost, the same ssh setup libvirt's transport uses)."""

    def __init__(self, uri: str) -> None:
        from virtmix.hosts.ssh import SshHost

        self.host = SshHost(uri)

    def run(self, archive: Path, script: str, label: str) -> None:
        self.host.run_fed("set -e; " + script, archive, label)


def _container_state(path: Path, tree: Any) -> dict[str, Any]:
    """The state.json of a restored tree: a plain copy, with the <idmap> it is owned by."""
    idmap = tree.find("idmap/uid")
    return {"method": "copy", "cache_entry": None, "privileged": idmap is None,
            "idmap": [int(idmap.get("start")), int(idmap.get("target")),
                      int(idmap.get("count"))] if idmap is not None else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "restored_from": str(path)}


TAR_X = "--numeric-owner --xattrs --xattrs-include='*' --acls"


def _unpack_container(path: Path, storage: Storage, name: str, tree: Any,
                      manifest: dict[str, Any], via: SshUnpack | None = None) -> None:
    cdir = storage.container_dir(name)
    part = cdir.with_name(f".{name}.restore-{os.getpid()}")
    state = _container_state(path, tree)
    if via is not None:
        import shlex

        q = shlex.quote
        via.run(path, (
            f"if [ -e {q(str(cdir))} ] || [ -L {q(str(cdir))} ]; then "
            f"echo 'restore: {cdir} exists there (a tree of another container?)' >&2; "
            f"exit 9; fi; mkdir -p -m 0711 {q(str(storage.root))}; "
            f"mkdir -p -m 0711 {q(str(cdir.parent))}; rm -rf {q(str(part))}; "
            f"mkdir -m 0711 {q(str(part))}; trap 'rm -rf {q(str(part))}' EXIT; "
            f"tar -C {q(str(part))} -xpf - {TAR_X} rootfs; "
            f": > {q(str(part / CONTAINER_MARKER))}; "
            f"printf '%s\\n' {q(json.dumps(state, sort_keys=True))} > "
            f"{q(str(part / 'state.json'))}; sync -f {q(str(part))}; "
            f"mv {q(str(part))} {q(str(cdir))}; trap - EXIT; sync -f {q(str(cdir.parent))}"),
            f"unpacking {path.name} into {cdir}")
    else:
        storage.ensure()
        if os.path.lexists(cdir):
            raise ConflictError(f"restore: {cdir} exists (a tree of another container?)",
                                hint="remove it, or restore under another --name")
        if os.path.lexists(part):
            shutil.rmtree(part)
        part.mkdir(mode=0o711)
        try:
            _run(["tar", "-C", str(part), "-xpf", str(path), "--numeric-owner", "--xattrs",
                  "--xattrs-include=*", "--acls", "rootfs"], f"unpacking {path}")
            (part / CONTAINER_MARKER).write_text("")
            with open(part / "state.json", "w") as f:
                json.dump(state, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            subprocess.run(["sync", "-f", str(part)], check=False)
            os.rename(part, cdir)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
    for fs in tree.iterfind("devices/filesystem"):
        if fs.find("target") is not None and fs.find("target").get("dir") == "/":
            fs.find("source").set("dir", str(storage.tree_dir(name)))


def _unpack_guest(path: Path, storage: Storage, name: str, tree: Any,
                  manifest: dict[str, Any], via: SshUnpack | None = None) -> None:
    gdir = Path(guest_path(str(storage.root), name))
    part = gdir.with_name(f".{name}.restore-{os.getpid()}")
    names = manifest["contents"]["files"]
    if via is not None:
        import shlex

        q = shlex.quote
        members = " ".join(q(f"files/{n}") for n in names)
        via.run(path, (
            f"if [ -e {q(str(gdir))} ] || [ -L {q(str(gdir))} ]; then "
            f"echo 'restore: {gdir} exists there' >&2; exit 9; fi; "
            f"mkdir -p {q(str(gdir.parent))}; rm -rf {q(str(part))}; "
            f"mkdir -m 0700 {q(str(part))}; trap 'rm -rf {q(str(part))}' EXIT; "
            f"tar -C {q(str(part))} -xpf - {members}; "
            f"mv {q(str(part))}/files/* {q(str(part))}/; rmdir {q(str(part))}/files; "
            f": > {q(str(part / GUEST_FILES_MARKER))}; sync -f {q(str(part))}; "
            f"mv {q(str(part))} {q(str(gdir))}; trap - EXIT; sync -f {q(str(gdir.parent))}"),
            f"unpacking {path.name} into {gdir}")
    else:
        if os.path.lexists(gdir):
            raise ConflictError(f"restore: {gdir} exists",
                                hint="restore under another --name")
        part.mkdir(mode=0o700, parents=True)
        try:
            _run(["tar", "-C", str(part), "-xpf", str(path),
                  *[f"files/{n}" for n in names]], f"unpacking {path}")
            for n in names:
                os.rename(part / "files" / n, part / n)
            os.rmdir(part / "files")
            (part / GUEST_FILES_MARKER).write_text("")  # destroy --delete-rootfs may delete
            os.rename(part, gdir)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
    by_old = {}
    for n, src in _guest_files(tree):
        by_old[str(src)] = str(gdir / n)
    for disk in tree.iterfind("devices/disk"):
        src = disk.find("source")
        if src is not None and src.get("file") in by_old:
            src.set("file", by_old[src.get("file")])
            drv = disk.find("driver")
            if drv is not None:
                drv.set("type", "qcow2")  # flattened: a standalone qcow2 now
            bs = disk.find("backingStore")
            if bs is not None:
                disk.remove(bs)
    for tag in ("kernel", "initrd"):
        node = tree.find(f"os/{tag}")
        if node is not None and node.text in by_old:
            node.text = by_old[node.text]
    # Anything else the guest kept in its old directory (serial log, NVRAM) gets a place
    # in the new one: two guests must never share a log file (qemu locks it).
    old_dirs = {str(Path(p).parent) + "/" for p in by_old}
    for node in tree.iter():
        for key, value in node.attrib.items():
            if value.startswith(tuple(old_dirs)) and value not in by_old.values():
                node.set(key, str(gdir / Path(value).name))
        if node.text and node.text.startswith(tuple(old_dirs)) and node.text not in \
                by_old.values():
            node.text = str(gdir / Path(node.text).name)


def _record_host(tree: Any, host: str | None, manifest: dict[str, Any],
                 notes: list[str]) -> None:
    """Restored on another inventory host (--host): its metadata names that host, and the
    admin is told the inventory must say so too (or plan would want it on the old one)."""
    from virtmix.util.identity import VIRTMIX_NS

    node = tree.find(f"metadata/{{{VIRTMIX_NS}}}entry")
    old = (manifest.get("metadata") or {}).get("host")
    if host is None or node is None or old in (None, host):
        return
    node.set("host", host)
    notes.append(f"{manifest['name']} was on host {old}; its inventory entry must now be "
                 f"under host {host}")
