"""destroy of a container: init is killed first; libvirt's destroy only when that did not
stop it (a driver without sendProcessSignal, a container that hangs on)."""

from __future__ import annotations

import libvirt

from virtmix.backend import libvirt_conn


class Dom:
    """A container as libvirt reports it: it stops `stops_after` polls after its init got
    SIGKILL (never, when None); sendProcessSignal fails when `signal_error`."""

    def __init__(self, stops_after: int | None = 2, signal_error: bool = False) -> None:
        self.stops_after, self.signal_error = stops_after, signal_error
        self.killed = self.destroyed = False
        self.polls = 0

    def sendProcessSignal(self, pid: int, sig: int, flags: int) -> None:  # noqa: N802
        if self.signal_error:
            raise libvirt.libvirtError("this function is not supported by the connection driver")
        assert (pid, sig) == (1, libvirt.VIR_DOMAIN_PROCESS_SIGNAL_KILL)
        self.killed = True

    def isActive(self) -> bool:  # noqa: N802
        if self.destroyed:
            return False
        self.polls += 1
        return not (self.killed and self.stops_after is not None
                    and self.polls > self.stops_after)

    def destroy(self) -> None:
        self.destroyed = True


def test_killing_init_stops_a_container_without_libvirts_destroy():
    dom = Dom(stops_after=3)
    assert libvirt_conn._kill_init(dom) is True
    assert dom.killed and not dom.destroyed and dom.polls == 4


def test_a_driver_that_cannot_signal_leaves_it_to_destroy():
    dom = Dom(signal_error=True)
    assert libvirt_conn._kill_init(dom) is False and not dom.killed


def test_a_container_still_up_after_the_wait_is_left_to_destroy(monkeypatch):
    monkeypatch.setattr(libvirt_conn, "KILL_WAIT", 0.1)
    dom = Dom(stops_after=None)
    assert libvirt_conn._kill_init(dom) is False and dom.killed and dom.isActive()
