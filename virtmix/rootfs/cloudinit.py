"""cloud-init's NoCloud seed from the inventory: documents, the `cidata` ISO, a tree's seed dir.

One seed for both kinds, so one user-data works for guests and containers:
  meta-data       instance-id, local-hostname
  user-data       #cloud-config with the hostname, root's keys (`ssh_keys`), root login
                  allowed; an entry's `cloud_init.user_data` mapping is merged over it; a
                  string (a script, a #cloud-config, a boothook, an #include) becomes the
                  second part of a MIME multipart after virtmix's own #cloud-config (so the
                  pinned host key and the keys still reach the guest); a string cloud-init
                  would not take as a part (already MIME, a jinja template) goes as it is
  network-config  version 2: each interface's static address (matched by MAC) and the
                  network's dnsmasq as nameserver; containers get `config: disabled`, libvirt
                  sets their addresses
  vendor-data     `cloud_init.vendor_data`, when given
Guests get it as a small ISO9660 image labelled `cidata` (built with pycdlib), attached as
a cdrom; a built container tree with cloud-init in it under /var/lib/cloud/seed/nocloud/.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import yaml

from virtmix.errors import RootfsError
from virtmix.util.identity import domain_uuid, mac_address

SEED_DIR = "var/lib/cloud/seed/nocloud"
LABEL = "cidata"


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# First line of a user-data text -> its MIME type as a part (cloud-init's own table, in
# cloudinit/handlers/__init__.py); longest prefix first (#cloud-config-archive).
_PART_TYPES = (("#cloud-config-archive", "cloud-config-archive"),
               ("#cloud-config", "cloud-config"), ("#cloud-boothook", "cloud-boothook"),
               ("#include", "x-include-url"), ("#!", "x-shellscript"))


def _part_type(text: str) -> str | None:
    """The MIME subtype cloud-init gives TEXT as one part of a multipart, or None when
    it is not one virtmix wraps (MIME already, a jinja template, gzip, unknown)."""
    return next((sub for prefix, sub in _PART_TYPES if text.startswith(prefix)), None)


def wraps_user_data(text: str) -> bool:
    """Whether a user-data text goes into a multipart beside virtmix's #cloud-config (and so
    a guest on a given image still gets the host key virtmix pins)."""
    return _part_type(text) is not None


def _multipart(parts: list[tuple[str, str]]) -> str:
    """A MIME multipart/mixed of (subtype, text) parts, as cloud-init reads user-data made
    by `cloud-init devel make-mime`: the standard library's email package, 8bit (the text
    as it is) where it can, base64 otherwise; a fixed boundary, so the seed only changes
    when the inventory does."""
    from email import policy
    from email.message import MIMEPart

    pol = policy.default.clone(utf8=True, linesep="\n", max_line_length=0)
    msg = MIMEPart(policy=pol)
    msg.make_mixed()
    for sub, text in parts:
        part = MIMEPart(policy=pol)
        part.set_content(text, subtype=sub, cte="8bit")
        msg.attach(part)
    boundary = "virtmix-user-data"
    while any(boundary in text for _, text in parts):
        boundary += "-x"
    msg.set_boundary(boundary)
    msg["MIME-Version"] = "1.0"
    return msg.as_string()


def _cloud_config(doc: str | dict[str, Any] | None, defaults: dict[str, Any]) -> str:
    if isinstance(doc, str):
        text = doc if doc.endswith("\n") else doc + "\n"
        sub = _part_type(text)
        if sub is None or not defaults:
            return text
        return _multipart([("cloud-config", "#cloud-config\n" + _dump(defaults)),
                           (sub, text)])
    return "#cloud-config\n" + _dump({**defaults, **(doc or {})})


def _network_config(name: str, uri: str, spec: Any, networks: dict[str, Any]) -> dict[str, Any]:
    ethernets: dict[str, Any] = {}
    for i, iface in enumerate(spec.interfaces):
        ifname = iface.name or f"eth{i}"
        mac = iface.mac or mac_address(uri, name, i)
        eth: dict[str, Any] = {"match": {"macaddress": mac}, "set-name": ifname}
        dhcp = iface.dhcp if iface.dhcp is not None else iface.ipv4 is None
        eth["dhcp4"] = bool(dhcp)
        if iface.ipv4 is not None:
            eth["addresses"] = [str(iface.ipv4)]
        if iface.gateway is not None:
            eth["routes"] = [{"to": "0.0.0.0/0", "via": str(iface.gateway)}]
        net = networks.get(iface.network) if iface.network else None
        if net is not None and net.ipv4 is not None:
            eth["nameservers"] = {"addresses": [str(net.ipv4.ip)]}
        ethernets[ifname] = eth
    return {"version": 2, "ethernets": ethernets}


def seed_documents(name: str, uri: str, kind: str, spec: Any, networks: dict[str, Any],
                   host_key: tuple[str, str] | None = None,
                   extra_keys: tuple[str, ...] = ()) -> dict[str, str]:
    """file name -> text of an entry's NoCloud seed (kind: container | guest; spec: its
    model). host_key = (private, public) ed25519 key cloud-init installs as the guest's host
    key (virtmix pins it); extra_keys: more keys for root (virtmix's own, for guests)."""
    hostname = getattr(spec, "hostname", None) or name
    ci = spec.cloud_init
    # locale: false leaves the image's locale alone (cc_locale fails in images without the
    # `locales` package, e.g. minbase builds, and marks the whole boot as an error).
    defaults: dict[str, Any] = {"hostname": hostname.split(".")[0], "disable_root": False,
                                "ssh_pwauth": False, "locale": False}
    if "." in hostname:
        defaults["fqdn"] = hostname
    authorized = list(dict.fromkeys([*spec.ssh_keys, *extra_keys]))
    if authorized:
        defaults["ssh_authorized_keys"] = authorized
    if host_key is not None:
        defaults["ssh_deletekeys"] = True
        defaults["ssh_keys"] = {"ed25519_private": host_key[0], "ed25519_public": host_key[1]}
    meta: dict[str, Any] = {"instance-id": f"virtmix-{domain_uuid(uri, name)}",
                            "local-hostname": hostname}
    if spec.ssh_keys:
        meta["public-keys"] = list(spec.ssh_keys)
    docs = {"meta-data": _dump(meta),
            "user-data": _cloud_config(ci.user_data if ci else None, defaults)}
    if kind == "container":
        docs["network-config"] = _dump({"network": {"config": "disabled"}})
    else:
        docs["network-config"] = _dump(_network_config(name, uri, spec, networks))
    if ci is not None and ci.vendor_data is not None:
        docs["vendor-data"] = _cloud_config(ci.vendor_data, {})
    return docs


def write_seed_iso(path: Path, docs: dict[str, str]) -> None:
    """The seed as an ISO9660 image labelled `cidata` (Joliet and Rock Ridge names, which
    cloud-init reads), written under a temporary name, fsynced and renamed into place."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    for name, text in docs.items():
        data = text.encode()
        iso_name = name.upper().replace("-", "_") + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), f"/{iso_name}", rr_name=name,
                   joliet_path=f"/{name}")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fp:
            iso.write_fp(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RootfsError(f"writing the cloud-init seed {path}: {exc}") from None
    finally:
        iso.close()


def has_cloud_init(tree: Path) -> bool:
    return (tree / "usr/bin/cloud-init").exists()


def write_seed_dir(tree: Path, docs: dict[str, str]) -> None:
    """The seed in a container tree, where cloud-init's NoCloud source looks first."""
    from virtmix.util.files import write_file

    for name, text in docs.items():
        write_file(tree / SEED_DIR / name, text, 0o600)
