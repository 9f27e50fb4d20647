"""Verified starts: a domain libvirt reports started counts as up only once it stayed up.

libvirt's create() returns as soon as the container's init (or QEMU) was spawned: an init
that exits at once (a missing library, `/bin/false`) leaves the domain shut off a few
milliseconds later, and apply/start used to report it running. So every started domain is
watched for a short settle window (SETTLE_SECONDS, from its own start: the windows of an
apply's many starts overlap, one poll loop watches them all). With `--wait`, a container
whose init is systemd is then waited for until `systemctl is-system-running` (run in its
namespaces) says running or degraded, and a guest until its libvirt or ssh answers.

A domain that died is reported with the last lines of its libvirt log (and a guest's serial
log), so the admin sees why without hunting for the file.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from virtmix.errors import BackendError, NotFoundError, StartFailedError, VirtmixError

SETTLE_SECONDS = 1.5     # how long a just-started domain must stay up to count as started
WAIT_SECONDS = 120.0     # --wait: how long systemd (or a guest's ssh/libvirt) may take
POLL_SECONDS = 0.1
LOG_LINES = 10
ALIVE = ("running", "blocked", "paused")
READY = ("running", "degraded")
LIBVIRT_LOG_DIR = Path("/var/log/libvirt")


def settle_seconds() -> float:
    """The settle window (env VIRTMIX_SETTLE_SECONDS overrides, e.g. for slow hosts)."""
    value = os.environ.get("VIRTMIX_SETTLE_SECONDS")
    try:
        return float(value) if value else SETTLE_SECONDS
    except ValueError:
        raise BackendError(f"VIRTMIX_SETTLE_SECONDS={value!r}: expected seconds") from None


@dataclass
class Started:
    """One domain started by this command, and what its watch found."""

    conn: Any
    name: str
    address: str
    kind: str                       # container | guest
    began: float = field(default_factory=time.monotonic)
    failure: str | None = None      # why it does not count as started
    note: str = ""                  # what --wait saw (e.g. "systemd running")
    reach: Any = None               # guests: a callable that raises unless it answers

    def fail(self, message: str) -> None:
        self.failure = message


def _state(s: Started) -> str:
    try:
        return str(s.conn.state(s.name))
    except NotFoundError:
        return "gone (a transient domain is undefined when it stops)"


def _is_local(uri: str) -> bool:
    from virtmix.hosts import is_local

    return bool(is_local(uri))


def _short(line: str, width: int = 200) -> str:
    return line if len(line) <= width else "..." + line[-width:]  # the end says the most


def relevant_lines(text: str, lines: int) -> list[str]:
    """The last lines of a log, from its last start on (libvirt writes "starting up"),
    without libvirt_lxc's own long command line."""
    rows = [x for x in text.splitlines() if x.strip()]
    starts = [n for n, x in enumerate(rows) if x.endswith(": starting up")]
    if starts:
        rows = rows[starts[-1]:]
    rows = [x for x in rows if "LIBVIRT_LOG_OUTPUTS=" not in x]
    return [_short(x) for x in rows[-lines:]]


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return relevant_lines(text, lines)


def log_files(uri: str, name: str, kind: str, xml: str = "") -> list[Path]:
    """Where libvirt (and a guest's serial console) wrote about this domain."""
    driver = "lxc" if kind == "container" else "qemu"
    files = [LIBVIRT_LOG_DIR / driver / f"{name}.log"]
    if xml:
        try:
            root = etree.fromstring(xml.encode())
            files += [Path(p) for p in root.xpath(
                "devices/serial[@type='file']/source/@path|devices/console[@type='file']"
                "/source/@path")]
        except etree.XMLSyntaxError:
            pass
    return list(dict.fromkeys(files))


def log_tail(s: Started, lines: int = LOG_LINES) -> str:
    """The last lines of the domain's logs, indented, each file named; '' if none."""
    xml = ""
    try:
        xml = s.conn.get(s.name).xml
    except VirtmixError:
        pass
    files = log_files(s.conn.uri, s.name, s.kind, xml)
    parts = []
    if _is_local(s.conn.uri):
        for f in files:
            got = _tail(f, lines)
            if got:
                parts.append(f"  last lines of {f}:\n" + "\n".join("    " + x for x in got))
        return "\n".join(parts)
    from virtmix.hosts.ssh import run_remote
    from virtmix.util.uris import is_ssh_uri

    if not is_ssh_uri(s.conn.uri):
        return ""
    f = files[0]
    try:
        text = run_remote(s.conn.uri, f"tail -n 60 {shlex.quote(str(f))}", timeout=15)
    except VirtmixError as exc:
        return f"  (its log {f} in the guest could not be read: {exc.message})"
    got = relevant_lines(text, lines)
    return f"  last lines of {f} (in the guest):\n" + "\n".join("    " + x for x in got)


def _died(s: Started, state: str) -> str:
    msg = f"{s.kind} {s.address} stopped right after it started (state: {state})"
    tail = log_tail(s)
    return msg + ("\n" + tail if tail else "")


def watch(started: list[Started], *, settle: float | None = None,
          stop: threading.Event | None = None) -> None:
    """Poll every started domain until its own settle window passed; mark those that died.

    One loop for all: 20 containers started together settle in one window, not twenty.
    """
    settle = settle_seconds() if settle is None else settle
    pending = [s for s in started if s.failure is None]
    while pending:
        now = time.monotonic()
        for s in list(pending):
            try:
                state = _state(s)
            except VirtmixError as exc:
                s.fail(f"{s.kind} {s.address}: its state could not be read after start: "
                       f"{exc.message}")
                pending.remove(s)
                continue
            if state not in ALIVE:
                s.fail(_died(s, state))
                pending.remove(s)
            elif now >= s.began + settle:
                pending.remove(s)
        if pending:
            if stop is not None and stop.is_set():
                for s in pending:
                    s.note = "interrupted before its settle window ended: not verified"
                return
            time.sleep(POLL_SECONDS)


# -- --wait: systemd inside containers, the guest's libvirt or ssh -------------------------
_SYSTEMD_SH = (
    'exe=$(readlink /proc/"$pid"/exe); '
    'case "$exe" in *systemd*) nsenter -t "$pid" -a -- systemctl is-system-running '
    '2>/dev/null || true;; *) echo "no-systemd $exe";; esac')


def _systemd_state(s: Started) -> str:
    """systemd's word for the container (running, starting, degraded, ...), or
    'no-systemd EXE' when its init is not systemd (nothing to wait for)."""
    if _is_local(s.conn.uri):
        from virtmix.hosts.local import init_pid

        pid = init_pid(s.name, s.conn.domain_pid(s.name))
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError as exc:
            raise BackendError(f"cannot read the init of {s.address}: {exc}") from None
        if "systemd" not in exe:
            return f"no-systemd {exe}"
        res = subprocess.run(["nsenter", "-t", str(pid), "-a", "--", "systemctl",
                              "is-system-running"], capture_output=True, text=True,
                             timeout=30, check=False)
        return res.stdout.strip() or res.stderr.strip()[-200:] or "unknown"
    from virtmix.hosts.ssh import init_pid_sh, run_remote

    script = init_pid_sh(s.name, s.conn.domain_pid(s.name)) + _SYSTEMD_SH
    return run_remote(s.conn.uri, script, timeout=30).strip() or "unknown"


def _wait_one(s: Started, deadline: float, timeout: float) -> None:
    last = "no answer yet"
    while True:
        state = _state(s)
        if state not in ALIVE:
            s.fail(_died(s, state))
            return
        try:
            if s.kind == "container":
                last = _systemd_state(s)
                if last.startswith("no-systemd"):
                    s.note = f"init {last.split(' ', 1)[1]} is not systemd: nothing to wait for"
                    return
                if last in READY:
                    s.note = f"systemd {last}"
                    return
            elif s.reach is None:
                s.note = "no ssh or libvirt of its own to ask: only its process was checked"
                return
            else:
                s.reach()
                s.note = "answering"
                return
        except VirtmixError as exc:
            last = exc.message
        except (OSError, subprocess.SubprocessError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            what = "systemd inside did not report running or degraded" \
                if s.kind == "container" else "it did not answer"
            s.fail(f"{s.kind} {s.address}: {what} within {timeout:g}s (last: {last})"
                   + ("\n" + log_tail(s) if s.kind == "guest" else ""))
            return
        time.sleep(0.5)


def wait_ready(started: list[Started], timeout: float = WAIT_SECONDS) -> None:
    """--wait: every started domain that survived its settle window, in parallel."""
    alive = [s for s in started if s.failure is None]
    deadline = time.monotonic() + timeout
    threads = [threading.Thread(target=_wait_one, args=(s, deadline, timeout), daemon=True)
               for s in alive]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def guest_reach(site: Any, entry: Any) -> Callable[[], None] | None:
    """--wait for a guest: a callable that raises unless the guest answers (its libvirt if
    it hosts containers, else its ssh if virtmix built its image); None when virtmix has
    no way to ask it (then only its QEMU process is checked)."""
    children = site.children(entry.name)
    if children:
        uri = children[0].uri

        def libvirt_answers() -> None:
            from virtmix.backend import open_connection
            from virtmix.nesting.guests import register_transports

            register_transports(site)
            open_connection(uri).close()
        return libvirt_answers
    image = getattr(entry.spec, "image", None)
    if image is not None and image.path is None:
        def ssh_answers() -> None:
            from virtmix.images.guest import guest_address, storage_for
            from virtmix.images.keys import run_ssh

            run_ssh(storage_for(site), guest_address(entry), "true", timeout=15)
        return ssh_answers
    return None


def verify_one(s: Started, *, wait: bool, timeout: float = WAIT_SECONDS) -> None:
    """For one domain (the `start` verb): watch it, optionally wait; raise if it failed."""
    watch([s])
    if wait and s.failure is None:
        wait_ready([s], timeout)
    if s.failure:
        raise StartFailedError(s.failure)
