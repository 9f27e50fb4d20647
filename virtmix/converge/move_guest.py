"""Move a guest to another libvirt host: live (libvirt's migration) or cold (shut down, copy
its disks, start it there), with every file it needs on the target first.

libvirt migrates a running guest's memory and, with VIR_MIGRATE_NON_SHARED_INC, its
writable disks' top layers; the target must already have:
- each writable disk's file: libvirt precreates only disks that are volumes of a storage
  pool ("no storage pool with matching target path"), virtmix's are plain files, so
  virtmix creates each there (`qemu-img create`, same format, virtual size, backing file);
- everything else the definition names: kernel, initrd, loader, read-only disks (the
  cloud-init seed ISO) and each disk's backing chain (a virtmix guest's root disk is a
  qcow2 overlay of a cached base image): copied with rsync (sparse) where missing, while
  the guest runs.
NON_SHARED_INC, not NON_SHARED_DISK: the full copy would flatten each overlay into one
standalone image on the target and send the base image's bytes inside every migration;
with the base copied once (or already there), only the guest's own layer crosses during it.

A cold move copies the same files, and the writable disks themselves while the guest is
off (shut down, forced off after GUEST_STOP). Two connections of this machine share its
files: nothing is copied and the migration is a plain one. Any failure removes what was
made on the target (files and directories created there, its definition) and leaves the
guest on the source, running if it ran.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shlex
import time
from dataclasses import dataclass, field

from lxml import etree

from virtmix.backend import Backend
from virtmix.converge.move import RUNNING, START_WAIT, Moved
from virtmix.converge.observe import owned_fields
from virtmix.converge.plan_xml import adapt_domain_xml
from virtmix.errors import ConflictError, StateError, UsageError, VirtmixError
from virtmix.hosts import Host, host_for, is_local
from virtmix.hosts.sync import sync_files
from virtmix.inventory.site import Entry, Site
from virtmix.util.faults import fault_point
from virtmix.util.layout import GUEST_FILES_MARKER
from virtmix.util.polling import poll

GUEST_STOP = 60.0  # seconds a guest gets to shut down for a cold move
JOURNAL = ".virtmix-moving"  # beside a guest's disks on the target while it moves there


@dataclass
class Disk:
    path: str
    format: str          # qemu-img's name: qcow2, raw
    readonly: bool


@dataclass
class GuestFiles:
    """The files of this machine's kind that a guest's definition names."""

    disks: list[Disk] = field(default_factory=list)     # <disk type='file'> with a source
    boot: list[str] = field(default_factory=list)       # kernel, initrd, loader
    logs: list[str] = field(default_factory=list)       # chardev/log files qemu writes
    other_writable: list[str] = field(default_factory=list)  # block devices, networks...

    @property
    def writable(self) -> list[Disk]:
        return [d for d in self.disks if not d.readonly]

    def dirs(self) -> list[str]:
        """The directories of everything, in a stable order (made on the target)."""
        paths = [d.path for d in self.disks] + self.boot + self.logs
        return list(dict.fromkeys(posixpath.dirname(p) for p in paths))


def guest_files(xml: str) -> GuestFiles:
    """Read the files from a guest's definition (pure)."""
    root = etree.fromstring(xml.encode())
    out = GuestFiles()
    for tag in ("os/kernel", "os/initrd", "os/loader"):
        node = root.find(tag)
        if node is not None and node.text and node.text.strip():
            out.boot.append(node.text.strip())
    for node in root.iterfind("devices/disk"):
        src = node.find("source")
        readonly = node.find("readonly") is not None or node.get("device") == "cdrom"
        if node.get("type", "file") != "file":
            if not readonly:
                out.other_writable.append(f"{node.get('type')} disk "
                                          f"{_target(node) or '?'}")
            continue
        if src is None or not src.get("file"):
            continue  # an empty cdrom drive
        drv = node.find("driver")
        fmt = drv.get("type") if drv is not None and drv.get("type") else "raw"
        out.disks.append(Disk(str(src.get("file")), str(fmt), readonly))
    for node in root.iterfind("devices/*"):
        if node.tag != "disk" and node.get("type") == "file":
            src = node.find("source")
            if src is not None and src.get("path"):
                out.logs.append(str(src.get("path")))
        log = node.find("log")
        if log is not None and log.get("file"):
            out.logs.append(str(log.get("file")))
    return out


def _target(node: etree._Element) -> str | None:
    tgt = node.find("target")
    return tgt.get("dev") if tgt is not None else None


def migration_uri(address: str | None) -> str | None:
    """libvirt's migration URI for a target host's `migration_address`."""
    if not address:
        return None
    return f"tcp://[{address}]" if ":" in address else f"tcp://{address}"


def migration_uri_for(site: Site, entry: Entry) -> str | None:
    """The migration URI of the host an entry (a guest) is going to."""
    host = site.inventory.hosts.get(entry.host)
    return migration_uri(host.migration_address if host is not None else None)


def move_options(site: Site, entry: Entry) -> dict[str, str | None]:
    """move_guest's keyword arguments for an entry as the inventory now places it: the
    target's migration URI, and the guest's own directory of virtmix's storage (the same
    path on every host), handed over with the guest."""
    from virtmix.render.views import storage_dir
    from virtmix.util.layout import guest_path

    return {"migrate_uri": migration_uri_for(site, entry),
            "own_dir": guest_path(storage_dir(site), entry.name)}


@dataclass
class Image:
    """One disk image as qemu-img sees it: its size and what it is layered on."""

    path: str
    format: str
    virtual_size: int
    backing: str | None = None          # as written in the image (may be relative)
    backing_format: str | None = None
    chain: list[str] = field(default_factory=list)  # absolute paths of all below it


def image_info(host: Host, path: str) -> Image:
    """qemu-img's view of path and its backing chain (-U: a running guest holds the lock)."""
    out = host.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", path])
    layers = json.loads(out)
    if isinstance(layers, dict):
        layers = [layers]
    top = layers[0]
    return Image(path, str(top.get("format", "raw")), int(top["virtual-size"]),
                 top.get("backing-filename"), top.get("backing-filename-format"),
                 [str(layer["filename"]) for layer in layers[1:]])


# One command on the target: which of the files before `--dirs` exist there ("have
# PATH"), and each directory after it made (mkdir -p), with the topmost one it made
# ("made DIR", removed whole by undo).
SURVEY_SH = ('mode=f; for a; do if [ "$a" = --dirs ]; then mode=d; continue; fi; '
             'if [ $mode = f ]; then if [ -e "$a" ]; then echo "have $a"; fi; '
             'else d=$a; t=; while [ ! -e "$d" ]; do t=$d; d=$(dirname "$d"); done; '
             'if [ -n "$t" ]; then echo "made $t"; fi; mkdir -p "$a" || exit 1; fi; done')


class TargetFiles:
    """Files made on the target host for one move, removed again by undo(). Each step
    is one command there (over ssh: a connection each, ~0.3 s here)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.host = host_for(uri)
        self.files: list[str] = []
        self.dirs: list[str] = []

    def survey(self, paths: list[str], dirs: list[str]) -> set[str]:
        """Which of paths exist there; every dir of dirs made there."""
        out = self.host.run(["sh", "-c", SURVEY_SH, "sh", *paths, "--dirs", *dirs])
        have = set()
        for line in out.splitlines():
            kind, _, path = line.partition(" ")
            if kind == "have":
                have.add(path)
            elif kind == "made" and path not in self.dirs:
                self.dirs.append(path)
        return have

    def copy(self, src_uri: str, paths: list[str]) -> float:
        """Copy files of src_uri's host to the same paths there (one rsync, sparse)."""
        self.files += paths
        return sync_files(src_uri, self.uri, paths)

    def create(self, images: list[Image], marker: str | None = None,
               journal: tuple[str, str, list[str]] | None = None) -> None:
        """An empty image like each of images there (same format, size, backing file),
        and the (empty) marker file. journal (path, the guest's UUID, its disks' paths
        there) is written first: a move killed before commit() leaves disks there that
        the next move of the same guest knows as its own (_leftovers)."""
        cmds = []
        if journal:
            path, uuid, disks = journal
            cmds.append(shlex.join(["printf", "%s\\n", uuid, *disks]) + " > "
                        + shlex.quote(path))
            self.files.append(path)
        for img in images:
            backing = (["-b", img.backing, "-F", img.backing_format or "raw"]
                       if img.backing else [])
            cmds.append(shlex.join(["qemu-img", "create", "-q", "-f", img.format, *backing,
                                    img.path, str(img.virtual_size)]))
            self.files.append(img.path)
        if marker:
            cmds.append(f": > {shlex.quote(marker)}")
            self.files.append(marker)
        if cmds:
            self.host.run(["sh", "-c", " && ".join(cmds)])

    def commit(self, journal: str | None, moved: Moved) -> None:
        """The move is done: its journal goes (a failure is a note: the guest moved)."""
        if journal:
            try:
                self.host.run(["rm", "-f", "--", journal])
            except VirtmixError as exc:
                moved.notes.append(f"{journal} on {self.uri} was not deleted: {exc.message}")

    def leftovers(self, uuid: str, disks: list[str]) -> bool:
        """Whether every one of disks is listed in a journal of a move of this guest
        (UUID) there: then they, and the journals, are removed, and True."""
        journals = list(dict.fromkeys(posixpath.join(posixpath.dirname(d), JOURNAL)
                                      for d in disks))
        out = self.host.run(["sh", "-c", 'for j; do echo "== $j"; cat "$j" 2>/dev/null; '
                             "done; true", "sh", *journals])
        listed: set[str] = set()
        for block in out.split("== ")[1:]:
            lines = block.splitlines()
            if len(lines) > 1 and lines[1] == uuid:
                listed.update(lines[2:])
        if not set(disks) <= listed:
            return False
        self.host.run(["rm", "-f", "--", *disks, *journals])
        return True

    def undo(self) -> None:
        """Remove what this move made there; directories made for it go whole."""
        with contextlib.suppress(VirtmixError):
            if self.files or self.dirs:
                self.host.run(["rm", "-rf", "--", *self.files, *self.dirs])


def _prepare_target(src: Backend, dst: Backend, files: GuestFiles, tgt: TargetFiles,
                    marker: str | None, uuid: str, moved: Moved
                    ) -> tuple[list[Image], list[str]]:
    """Refuse what cannot be copied; make the directories there. The writable disks'
    images, and what is missing there of the read-only files (boot files, read-only
    disks, backing chains)."""
    if files.other_writable:
        raise UsageError(f"cannot copy the writable {', '.join(files.other_writable)} to "
                         f"{dst.uri}: only file disks are copied")
    src_host = host_for(src.uri)
    images = [image_info(src_host, d.path) for d in files.writable]
    needed = files.boot + [d.path for d in files.disks if d.readonly]
    needed = list(dict.fromkeys(needed + [p for img in images for p in img.chain]))
    dirs = files.dirs() + [posixpath.dirname(p) for p in needed]
    dirs += [posixpath.dirname(marker)] if marker else []
    have = tgt.survey([d.path for d in files.writable] + needed, list(dict.fromkeys(dirs)))
    there = [d.path for d in files.writable if d.path in have]
    if there and tgt.leftovers(uuid, there):
        moved.notes.append(f"removed what an interrupted move left on {dst.uri}: "
                           + ", ".join(there))
    elif there:
        raise ConflictError(
            f"{', '.join(there)} already exist(s) on {dst.uri}: a leftover of another guest "
            "or move (remove it there), or storage both hosts share (virtmix copies disks; "
            "shared storage between two machines is not supported)")
    return images, [p for p in needed if p not in have]


def _running(conn: Backend, name: str) -> bool:
    try:
        return conn.state(name) in RUNNING
    except VirtmixError:
        return False


def move_guest(src: Backend, dst: Backend, name: str, rendered: str, *, live: bool,
               migrate_uri: str | None = None, own_dir: str | None = None) -> Moved:
    """Move guest `name` from src to dst; `rendered` is its definition for dst (its UUID
    and MACs are kept). live: libvirt's live migration (the guest must run); else cold.
    own_dir: the guest's directory of virtmix's storage; once it runs (or is defined) on
    dst, the directory is deleted on the source if virtmix's marker says it made it
    (the marker goes to dst first), so the guest can come back later. Other files on the
    source (base images, given disks) are kept."""
    t0 = time.monotonic()
    rec = src.get(name)
    if rec.kind == "lxc":
        raise UsageError(f"{name} on {src.uri} is a container: it moves by copying its tree")
    try:
        there = dst.get(name)
    except VirtmixError:
        there = None
    if there is not None:
        if there.uuid != rec.uuid:
            raise ConflictError(f"{name} already exists on {dst.uri} (another UUID)")
        return Moved(name, src.uri, dst.uri, there.state, notes=["already there"])
    xml = adapt_domain_xml(rendered, rec.uuid, owned_fields(rec.xml).get("interfaces", ()),
                           set())
    moved = Moved(name, src.uri, dst.uri, rec.state)
    was_running = rec.state in RUNNING
    if live and not was_running:
        raise StateError(f"{name} is {rec.state} on {src.uri}: only a running guest "
                         "migrates live")
    # Two daemons of this machine see the same files: nothing to copy.
    shared = is_local(src.uri) and is_local(dst.uri)
    files = guest_files(rec.xml)
    tgt = TargetFiles(dst.uri)
    # virtmix's own directory of the guest (its marker there) goes with it.
    mine = None if shared or not own_dir else _own_dir(src.uri, own_dir)
    migrated = defined = False
    try:
        images: list[Image] = []
        missing: list[str] = []
        marker = mine and posixpath.join(mine, GUEST_FILES_MARKER)
        journal = None
        if not shared:
            images, missing = _prepare_target(src, dst, files, tgt, marker, rec.uuid, moved)
            if images:
                journal = posixpath.join(posixpath.dirname(images[0].path), JOURNAL)
        if was_running:  # while it runs; a stopped guest's go in one copy with its disks
            moved.live_copy, missing = tgt.copy(src.uri, missing), []
        if not shared:  # (qemu-img checks the backing file is there)
            tgt.create(images if live else [], marker,
                       (journal, rec.uuid, [img.path for img in images]) if journal else None)
        fault_point("guest-move-prepared")
        if live:
            stats = src.migrate(name, dst, xml, copy_storage=not shared, uri=migrate_uri)
            migrated = True
            if not poll(lambda: True if _running(dst, name) else None, timeout=START_WAIT):
                raise StateError(f"{name}: migrated to {dst.uri} but not running there")
            moved.state = "running"
            moved.downtime = stats.get("downtime", 0) / 1000
            moved.notes.append(f"libvirt: {stats.get('time_elapsed', 0) / 1000:.2f}s, "
                               f"downtime {moved.downtime:.3f}s, "
                               f"{stats.get('data_total', 0) // 2**20} MiB of memory")
        else:
            t_down = time.monotonic()
            if was_running:
                _stop(src, name)
            moved.frozen_copy = tgt.copy(src.uri, missing + [img.path for img in images])
            fault_point("guest-move-copied")
            dst.define(xml)
            defined = True
            if was_running:
                dst.start(name)
                if not poll(lambda: True if _running(dst, name) else None,
                            timeout=START_WAIT):
                    raise StateError(f"{name} did not reach running on {dst.uri}")
                moved.downtime, moved.state = time.monotonic() - t_down, "running"
    except BaseException:
        if migrated:
            raise  # it runs there (libvirt undefined it here): the files are its own now
        if defined:
            _drop_definition(dst, name)
        tgt.undo()
        if was_running and not live and not _running(src, name):
            src.start(name)  # it ran before the move: it runs again where it was
        raise
    tgt.commit(journal, moved)
    if not live:
        src.undefine(name)
    if mine:
        try:
            host_for(src.uri).run(["rm", "-rf", "--", mine])
            moved.notes.append(f"deleted {mine} on {src.uri}")
        except VirtmixError as exc:  # it has moved: a leftover is a note, not a failure
            moved.notes.append(f"{mine} on {src.uri} was not deleted: {exc.message}")
    moved.total = time.monotonic() - t0
    return moved


def _own_dir(uri: str, own_dir: str) -> str | None:
    """own_dir if virtmix's marker says virtmix made it there (then it is virtmix's to
    delete), else None."""
    marker = posixpath.join(own_dir, GUEST_FILES_MARKER)
    try:
        out = host_for(uri).run(["sh", "-c", 'if [ -e "$1" ]; then echo yes; fi', "sh",
                                 marker])
    except VirtmixError:
        return None
    return own_dir if out.strip() == "yes" else None


def _stop(src: Backend, name: str) -> None:
    src.request_shutdown(name)
    if not poll(lambda: True if src.state(name) == "shutoff" else None,
                timeout=GUEST_STOP, interval=0.5):
        src.destroy(name)


def _drop_definition(dst: Backend, name: str) -> None:
    with contextlib.suppress(VirtmixError):
        if dst.state(name) != "shutoff":
            dst.destroy(name)
    with contextlib.suppress(VirtmixError):
        dst.undefine(name)
