"""A move in terms of the inventory: where the trees live on each side, and the markers
that make a copied tree virtmix's there (so destroy --delete-rootfs, prepare and a later
move treat it as their own).

Built trees (`rootfs: {distro...}`) live in the site's storage: on this machine under
STORAGE/containers/NAME (marker and state.json; the copy is a plain tree, method "copy"),
in a guest at the same path with the pushed-tree marker (push key and manifest, as
nesting/ops.push_tree writes it). Given trees (`rootfs: {path}`) are copied to the same
path and never deleted on the source (virtmix never deletes what it was given).
"""

from __future__ import annotations

import posixpath
import shlex
import shutil
import time
from pathlib import Path

from virtmix.converge.move import TreeHooks
from virtmix.inventory.model import RootfsBuild
from virtmix.inventory.site import Entry, Site
from virtmix.util.uris import is_local


def _built(entry: Entry) -> bool:
    return isinstance(entry.spec.rootfs, RootfsBuild)  # type: ignore[union-attr]


def hooks_for(site: Site, entry: Entry, src_uri: str, notes: list[str]) -> TreeHooks:
    """Hooks for moving `entry` (as the inventory now places it) from src_uri."""
    hooks = TreeHooks()
    if _built(entry):
        if is_local(entry.uri):
            hooks.prepare, hooks.seal, hooks.drop_target = _local_target(site, entry)
        else:
            hooks.prepare, hooks.seal, hooks.drop_target = _remote_target(site, entry)
        hooks.drop_source = _source_dropper(site, entry.name, src_uri)
    else:
        created: list[str] = []
        hooks.prepare = _given_prepare(entry.uri, created)
        hooks.drop_target = _given_drop(entry.uri, created)
        notes.append(f"the given tree on {src_uri} is kept (virtmix never deletes it)")
    return hooks


def _storage(site: Site):  # type: ignore[no-untyped-def]
    from virtmix.rootfs.storage import Storage

    return Storage(site.inventory.settings.storage_dir)


def _local_target(site: Site, entry: Entry):  # type: ignore[no-untyped-def]
    from virtmix.render.views import container_idmap
    from virtmix.rootfs import remove_container_tree
    from virtmix.rootfs.from_model import spec_from_model

    storage = _storage(site)
    name = entry.name

    def prepare(path: str) -> None:
        if storage.read_state(name) is not None or storage.container_dir(name).exists():
            from virtmix.errors import ConflictError

            raise ConflictError(f"{storage.container_dir(name)} exists on this machine; "
                                f"remove it (destroy --delete-rootfs) before moving {name} here")
        storage.ensure()
        storage.make_container_dir(name)

    def seal(path: str) -> None:
        spec = spec_from_model(entry.spec.rootfs, base_dir=site.path.parent,  # type: ignore
                               mirror=site.inventory.settings.mirror)
        idmap = container_idmap(site, entry)
        storage.write_state(name, {
            "name": name, "hostname": name, "method": "copy", "virtmix": 1,
            "cache_entry": spec.cache_key() + "-moved", "privileged": idmap is None,
            "idmap": list(idmap) if idmap else None, "sshd": False, "password_file": None,
            "root_login": "locked", "clone_seconds": 0.0, "shift_seconds": 0.0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def drop(path: str) -> None:
        remove_container_tree(storage, name)

    return prepare, seal, drop


def _remote_target(site: Site, entry: Entry):  # type: ignore[no-untyped-def]
    from virtmix.hosts.ssh import run_remote
    from virtmix.nesting.ops import MANIFEST_SH, PUSHED, push_key

    q = shlex.quote

    def prepare(path: str) -> None:
        cdir = posixpath.dirname(path)
        run_remote(entry.uri, f"set -e; mkdir -p {q(cdir)}; rm -f {q(cdir + '/' + PUSHED)}")

    def seal(path: str) -> None:
        # What push_tree writes: the push key and the manifest of what is there, synced.
        marker = posixpath.join(posixpath.dirname(path), PUSHED)
        key = push_key(site, entry)
        run_remote(entry.uri, f"set -e; sync -f {q(path)}; m=$(cd {q(path)} && {MANIFEST_SH}); "
                              f"printf '%s %s\\n' {q(key)} \"$m\" > {q(marker)}.tmp; "
                              f"sync {q(marker)}.tmp; mv {q(marker)}.tmp {q(marker)}", timeout=300)

    def drop(path: str) -> None:
        run_remote(entry.uri, f"rm -rf {q(posixpath.dirname(path))}", timeout=300)

    return prepare, seal, drop


def _source_dropper(site: Site, name: str, src_uri: str):  # type: ignore[no-untyped-def]
    def drop(path: str) -> None:
        if is_local(src_uri):
            from virtmix.rootfs import remove_container_tree

            storage = _storage(site)
            if Path(path) == storage.tree_dir(name):
                remove_container_tree(storage, name)
        else:
            from virtmix.nesting.ops import delete_pushed_tree

            delete_pushed_tree(src_uri, path)
    return drop


def _given_prepare(uri: str, created: list[str]):  # type: ignore[no-untyped-def]
    def prepare(path: str) -> None:
        if is_local(uri):
            if not Path(path).exists():
                created.append(path)
            Path(path).mkdir(parents=True, exist_ok=True)
        else:
            from virtmix.hosts.ssh import run_remote

            out = run_remote(uri, f"[ -e {shlex.quote(path)} ] || echo new; "
                                  f"mkdir -p {shlex.quote(path)}")
            if out.strip() == "new":
                created.append(path)
    return prepare


def _given_drop(uri: str, created: list[str]):  # type: ignore[no-untyped-def]
    def drop(path: str) -> None:
        if path not in created:
            return  # it was there before the move: not ours to delete
        if is_local(uri):
            shutil.rmtree(path, ignore_errors=True)
        else:
            from virtmix.hosts.ssh import run_remote

            run_remote(uri, f"rm -rf {shlex.quote(path)}")
    return drop
