"""<vcpu> and <cputune>: CPU count, placement and scheduler settings, read and edited."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from virtmix.domain.xmlnode import Element, child, int_at, text
from virtmix.util.units import normalize_cpuset

SCHED_KEYS = ("shares", "period", "quota")  # libvirt's schema order inside <cputune>
# Elements that follow <vcpu>/<cputune> at the top of a domain (libvirt's schema order).
_AFTER_CPUTUNE = ("numatune", "resource", "sysinfo", "bootloader", "os", "idmap", "features",
                  "cpu", "clock", "on_poweroff", "on_reboot", "on_crash", "pm", "devices")


@dataclass
class CpuTune:
    vcpus: int | None = None
    cpuset: str | None = None               # <vcpu cpuset>, as written
    sched: dict[str, int] = field(default_factory=dict)  # shares, period, quota (set ones)
    vcpupin: dict[int, str] = field(default_factory=dict)  # as written
    emulatorpin: str | None = None


def read(root: Element) -> CpuTune:
    vcpu = root.find("vcpu")
    out = CpuTune()
    if vcpu is not None:
        out.vcpus = int(vcpu.text) if vcpu.text and vcpu.text.strip() else None
        out.cpuset = vcpu.get("cpuset")
    tune = root.find("cputune")
    if tune is None:
        return out
    for node in tune:  # one pass over the children (plans read thousands of documents)
        tag = node.tag
        if tag in SCHED_KEYS and node.text and node.text.strip():
            out.sched[tag] = int(node.text)
        elif tag == "vcpupin":
            out.vcpupin[int(node.get("vcpu", "0"))] = node.get("cpuset", "")
        elif tag == "emulatorpin":
            out.emulatorpin = node.get("cpuset")
    return out


def _cpuset(value: str | None) -> str | None:
    return normalize_cpuset(value) if value else None


def fields(ct: CpuTune, out: dict[str, Any]) -> None:
    """The plan's flat fields of <vcpu>/<cputune> (cpusets canonical)."""
    out["vcpus"] = ct.vcpus
    out["vcpu_cpuset"] = _cpuset(ct.cpuset)
    for key in SCHED_KEYS:
        out[f"cputune.{key}"] = ct.sched.get(key)
    out["cputune.vcpupin"] = tuple(sorted((v, normalize_cpuset(c))
                                          for v, c in ct.vcpupin.items()))
    out["cputune.emulatorpin"] = _cpuset(ct.emulatorpin)


def set_cpuset(root: Element, cpuset: str) -> None:
    """<vcpu cpuset=...> in a definition (a <vcpu>1</vcpu> is made when missing)."""
    vcpu = root.find("vcpu")
    if vcpu is None:
        vcpu = child(root, "vcpu", ("cputune",) + _AFTER_CPUTUNE)
        vcpu.text = "1"
    vcpu.set("cpuset", cpuset)


def set_sched(root: Element, values: dict[str, int]) -> None:
    """<cputune><shares|period|quota> in a definition, kept in libvirt's schema order."""
    tune = child(root, "cputune", _AFTER_CPUTUNE)
    for key in SCHED_KEYS:
        if key in values:
            child(tune, key).text = str(values[key])
    order = {k: i for i, k in enumerate(SCHED_KEYS)}
    tune[:] = sorted(tune, key=lambda n: order.get(str(n.tag), len(order)))


def sched_value(root: Element, key: str) -> int | None:
    return int_at(root, f"cputune/{key}")


__all__ = ["CpuTune", "fields", "read", "sched_value", "set_cpuset", "set_sched", "text"]
