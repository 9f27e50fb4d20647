"""Build base trees (mmdebstrap, else debootstrap) into the cache, atomically and locked."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtmix.errors import RootfsError, VirtmixError
from virtmix.rootfs import base_setup
from virtmix.rootfs.idmap import shift_tree
from virtmix.rootfs.sources import resolve_sources
from virtmix.rootfs.spec import RootfsSpec, host_architecture
from virtmix.rootfs.storage import CACHE_MARKER, Storage, remove_tree
from virtmix.util import children
from virtmix.util.faults import fault_point
from virtmix.util.files import fsync_dir, sync_filesystem, write_atomic

Progress = Callable[[str], None]
BUILD_MARKER = ".virtmix-build"
# What a container needs beyond the variant: systemd as init (booted by libvirt with
# <init>/sbin/init</init>) and login for the console getty (no longer Essential in trixie).
BASE_PACKAGES = ("systemd-sysv", "login")
# debootstrap knows fewer variants than mmdebstrap; "" = its default (required+important).
_DEBOOTSTRAP_VARIANT = {"minbase": "minbase", "buildd": "buildd", "important": "",
                        "required": "minbase"}


@dataclass(frozen=True)
class BaseTree:
    """A complete cache entry."""

    entry: str
    path: Path  # the entry dir; the tree is path / "tree"
    cached: bool  # True when it was already there

    @property
    def tree(self) -> Path:
        return self.path / "tree"


def builder_tool() -> str:
    """mmdebstrap when installed, else debootstrap (env VIRTMIX_ROOTFS_BUILDER overrides)."""
    wanted = os.environ.get("VIRTMIX_ROOTFS_BUILDER")
    for tool in ([wanted] if wanted else ["mmdebstrap", "debootstrap"]):
        if shutil.which(tool):
            return tool
    raise RootfsError(
        f"no rootfs builder: {wanted or 'mmdebstrap nor debootstrap'} not found in PATH",
        hint="apt-get install mmdebstrap (or run scripts/setup-host.sh)",
    )


def _die_with_parent() -> None:
    # Runs in the child before exec: if virtmix is killed (even SIGKILL), the kernel kills
    # the builder too, instead of leaving it writing into a directory the next build of the
    # same entry will clear. PR_SET_PDEATHSIG = 1; it survives exec.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def run_logged(cmd: list[str], log: Path, progress: Progress | None, what: str,
               activity: str | None = None) -> None:
    """Run cmd in its own session, output to log; kill the whole group if we are stopped.

    While it runs it is listed in virtmix.util.children as `activity` (default: "rootfs
    build (WHAT)"), so apply's Ctrl-C can say what it waits for, and kill it on a second."""
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)
        try:
            assert proc.stdout is not None
            with children.tracked(proc.pid, activity or f"rootfs build ({what})"):
                rc = _copy_output(proc, out, progress)
        except BaseException:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc < 0:
        raise RootfsError(f"{what} failed: killed by signal {-rc} (Ctrl-C twice, or another "
                          f"process); log {log}:")
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-12:]
        raise RootfsError(f"{what} failed (exit {rc}); log {log}:\n" + "\n".join(tail))


def _copy_output(proc: subprocess.Popen, out, progress: Progress | None) -> int:
    """Copy the child's output to the log, pass its I:/W: lines on; its exit code."""
    for raw in proc.stdout:
        out.write(raw)
        line = raw.decode(errors="replace").strip()
        if progress and line.startswith(("I: ", "W: ")):
            progress(line[3:])
    return proc.wait()


def _bootstrap_cmd(tool: str, spec: RootfsSpec, arch: str, tree: Path) -> tuple[list[str], list]:
    src = resolve_sources(spec.suite, spec.components, spec.mirror)
    pkgs = sorted(set(BASE_PACKAGES) | set(spec.packages))
    # A private mount namespace: the builder's /proc, /dev, /sys mounts inside the tree die
    # with it, so a killed build never leaves mounts behind (which deletion would refuse).
    ns = ["unshare", "--mount", "--propagation", "private", "--"]
    if tool == "mmdebstrap":
        return ns + [
            "mmdebstrap", "--mode=root", "--format=directory", f"--variant={spec.variant}",
            f"--architectures={arch}", f"--components={','.join(spec.components)}",
            f"--include={','.join(pkgs)}", spec.suite, str(tree), *src.lines,
        ], list(src.lines)
    if spec.variant not in _DEBOOTSTRAP_VARIANT:
        raise RootfsError(f"rootfs variant {spec.variant!r}: debootstrap cannot build it")
    variant = _DEBOOTSTRAP_VARIANT[spec.variant]
    return ns + [
        "debootstrap", *([f"--variant={variant}"] if variant else []), f"--arch={arch}",
        f"--components={','.join(spec.components)}", f"--include={','.join(pkgs)}",
        f"--keyring={src.keyring}", spec.suite, str(tree), src.main_uri,
    ], list(src.lines)


def _new_tmp(storage: Storage, entry: str) -> Path:
    tmp = storage.cache_root / f".build-{entry}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir(mode=0o711)  # traversable by _apt (see Storage.ensure)
    write_atomic(tmp / BUILD_MARKER, (entry + "\n").encode())
    return tmp


def _clean_stale(storage: Storage, entry: str) -> None:
    """Remove leftovers of killed builds of entry (we hold its lock: nobody else builds it)."""
    for p in storage.cache_root.glob(f".build-{entry}-*"):
        remove_tree(storage, p, storage.cache_root, BUILD_MARKER)


def _promote(storage: Storage, tmp: Path, entry: str, meta: dict) -> Path:
    fault_point("rootfs-build-before-marker")
    sync_filesystem(tmp)  # every file of the tree on disk before the marker says complete
    write_atomic(tmp / CACHE_MARKER, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    final = storage.cache_entry(entry)
    os.rename(tmp, final)  # atomic: the entry appears complete or not at all
    fsync_dir(final.parent)
    return final


def _check_cached(final: Path) -> None:
    """A cache entry is reused only if its marker reads and its tree is there: a marker is
    written after the tree was synced, but entries older than that were not."""
    try:
        json.loads((final / CACHE_MARKER).read_text())
        ok = (final / "tree" / "usr").is_dir() or (final / "tree" / "bin").exists()
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise RootfsError(f"cached base tree {final} is incomplete (its marker or tree is "
                          "damaged)", hint=f"delete {final} (no container may use it), then "
                          "apply again to rebuild it")


def _locked_build(storage: Storage, entry: str,
                  make: Callable[[Path, Path], dict]) -> BaseTree:
    final = storage.cache_entry(entry)
    if (final / CACHE_MARKER).is_file():
        _check_cached(final)
        return BaseTree(entry, final, cached=True)
    with storage.lock(f"cache-{entry}"):
        if (final / CACHE_MARKER).is_file():  # a concurrent build finished it meanwhile
            return BaseTree(entry, final, cached=True)
        _clean_stale(storage, entry)
        tmp = _new_tmp(storage, entry)
        try:
            # The log lives outside the temp dir, so it outlasts a failed build.
            log = storage.log_path("build", entry)
            fault_point("rootfs-build-begin")
            meta = make(tmp, log)
            meta["log"] = str(log)
            return BaseTree(entry, _promote(storage, tmp, entry, meta), cached=False)
        except BaseException:
            with contextlib.suppress(OSError, VirtmixError):
                remove_tree(storage, tmp, storage.cache_root, BUILD_MARKER)
            raise


Shift = tuple[int, int, int]  # (host uid, host gid, count) a tree is shifted to
FULL = 65536


def as_shift(shift: int | tuple[int, ...] | None) -> Shift | None:
    """N (uid = gid = N, 65536 ids), (uid, gid[, count]), or None (not shifted)."""
    if not shift:
        return None
    if isinstance(shift, int):
        return (shift, shift, FULL)
    uid, gid, *rest = shift
    return (uid, gid, rest[0] if rest else FULL)


def shifted_entry(key: str, shift: Shift) -> str:
    """KEY-uN (uid = gid, 65536 ids: the names older caches already use), else with -gM/-nC."""
    uid, gid, count = shift
    return (f"{key}-u{uid}" + (f"-g{gid}" if gid != uid else "")
            + (f"-n{count}" if count != FULL else ""))


def _shift_meta(shift: Shift) -> dict:
    return {"shift": shift[0], "shift_gid": shift[1], "shift_count": shift[2]}


def ensure_base(spec: RootfsSpec, storage: Storage, progress: Progress | None = None,
                tool: str | None = None, shift: int | tuple[int, ...] | None = None
                ) -> BaseTree:
    """The cached base tree of spec, building it first when missing.

    shift=N (or (uid, gid, count)) builds the tree owned by that host range directly (entry
    KEY-uN): what unprivileged containers need, without keeping an unshifted copy nobody
    uses.
    """
    sh = as_shift(shift)
    arch = spec.architecture or host_architecture()
    key = spec.cache_key(arch)
    entry = shifted_entry(key, sh) if sh else key
    storage.ensure()

    def make(tmp: Path, log: Path) -> dict:
        t0 = time.monotonic()
        used = tool or builder_tool()
        tree = tmp / "tree"
        cmd, lines = _bootstrap_cmd(used, spec, arch, tree)
        if progress:
            progress(f"{used} {spec.suite} ({spec.variant}, {arch})")
        t_builder = time.monotonic()
        run_logged(cmd, log, progress, f"{used} {spec.suite}")
        t_builder = time.monotonic() - t_builder
        if used == "debootstrap":  # debootstrap writes only its one mirror
            (tree / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
        if spec.hook:
            if progress:
                progress(f"site hook {spec.hook}")
            base_setup.run_hook(tree, Path(spec.hook), spec, log)
        base_setup.prepare_base(tree)
        if sh:
            if progress:
                progress(f"shifting ownership to {sh[0]} for an unprivileged container")
            shift_tree(tree, sh[0], sh[2], gid_offset=sh[1])
        return {"virtmix": 1, "entry": entry, "kind": "shifted" if sh else "base",
                "tool": used, "spec": spec.key_fields(arch), "hook_path": spec.hook,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.monotonic() - t0, 2),
                "builder_seconds": round(t_builder, 2), "base": key,
                **(_shift_meta(sh) if sh else {"shift": None})}

    return _locked_build(storage, entry, make)


def _shifted_sibling(storage: Storage, key: str) -> tuple[BaseTree, Shift] | None:
    """Another full (65536-id) shifted variant of the base `key`, to re-shift from."""
    if not storage.cache_root.is_dir():
        return None
    for p in sorted(storage.cache_root.glob(f"{key}-u*")):
        try:
            meta = json.loads((p / CACHE_MARKER).read_text())
        except (OSError, ValueError):
            continue
        if meta.get("kind") == "shifted" and meta.get("base") == key and meta.get("shift") \
                and meta.get("shift_count", FULL) == FULL:
            src = (int(meta["shift"]), int(meta.get("shift_gid") or meta["shift"]), FULL)
            return BaseTree(p.name, p, cached=True), src
    return None


def ensure_lower(spec: RootfsSpec, storage: Storage, shift: int | tuple[int, ...] | None,
                 progress: Progress | None = None) -> BaseTree:
    """The entry clones are made from: the base, or its variant shifted to the container's
    id range (one per range, as each unprivileged container has its own, see idranges).

    A shifted variant is copied from the cached base when there is one, else from another
    shifted variant of it (re-shifted: no rebuild), else built shifted directly.
    """
    sh = as_shift(shift)
    if not sh:
        return ensure_base(spec, storage, progress)
    key = spec.cache_key(spec.architecture or host_architecture())
    shifted = storage.cache_entry(shifted_entry(key, sh))
    if (shifted / CACHE_MARKER).is_file():
        return BaseTree(shifted.name, shifted, cached=True)
    base = storage.cache_entry(key)
    if (base / CACHE_MARKER).is_file():
        return ensure_shifted(BaseTree(key, base, cached=True), storage, sh, progress)
    sibling = _shifted_sibling(storage, key) if sh[2] == FULL else None
    if sibling is not None:
        return ensure_shifted(sibling[0], storage, sh, progress, source=sibling[1], key=key)
    return ensure_base(spec, storage, progress, shift=sh)


def ensure_shifted(base: BaseTree, storage: Storage, offset: int | tuple[int, ...],
                   progress: Progress | None = None, *, source: Shift | None = None,
                   key: str | None = None) -> BaseTree:
    """A copy of base owned by the user-namespace range `offset` (cached beside it).

    base is the unshifted entry, or (with source, its range, and key, the unshifted
    entry's name) a variant shifted for another range.
    """
    sh = as_shift(offset)
    assert sh is not None
    entry = shifted_entry(key or base.entry, sh)

    def make(tmp: Path, log: Path) -> dict:
        t0 = time.monotonic()
        if progress:
            progress(f"shifting ownership to {sh[0]} for an unprivileged container")
        run_logged(["cp", "-a", "--reflink=auto", str(base.tree), str(tmp / "tree")],
                   log, None, "copy of the base tree", activity="copy of a base tree")
        if source is None:
            shift_tree(tmp / "tree", sh[0], sh[2], gid_offset=sh[1])
        else:
            shift_tree(tmp / "tree", sh[0], sh[2], gid_offset=sh[1], source=source[0],
                       gid_source=source[1])
        meta = json.loads((base.path / CACHE_MARKER).read_text())
        meta.update(entry=entry, kind="shifted", base=key or base.entry, **_shift_meta(sh),
                    built=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    seconds=round(time.monotonic() - t0, 2))
        return meta

    return _locked_build(storage, entry, make)
