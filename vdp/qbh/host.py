"""Where an 802.1Qbh port profile goes on this host, and the host UUID it is sent with.

* An interface (``type='direct'``) or a PCI VF (``type='hostdev'``) -> :class:`QbhPort`: the PF interface
  that takes the requests and the VF number there (None: the device itself), read from sysfs the way
  libvirt finds them (``physfn`` and the PF's ``virtfnN`` links), refusing a /sys that shows another
  network namespace.
* The host UUID sent as ``IFLA_PORT_HOST_UUID``, found the way libvirt's daemon finds its own.

Only files are read here; the requests themselves are ``vdp.qbh.client``'s.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from collections.abc import Sequence

from hooks.errors import ConfigError, FeatureError, PeerUnavailable
from hooks.plain import plain

__all__ = [
    "QbhPort",
    "host_uuid",
    "libvirt_host_uuid",
    "resolve_pci",
    "resolve_port",
]

SYSFS = "/sys"
DMI_UUID_PATHS = ("/sys/devices/virtual/dmi/id/product_uuid", "/sys/class/dmi/id/product_uuid")
MACHINE_ID_PATH = "/etc/machine-id"
LIBVIRT_CONFS = ("/etc/libvirt/libvirtd.conf", "/etc/libvirt/virtqemud.conf")


@plain(frozen=True)
class QbhPort:
    """Where a port profile is applied.

    ``ifname`` is the interface the guest's traffic uses (the VF's netdev, or the device itself): it is set
    down before DISASSOCIATE and up after ASSOCIATE.  Requests go to ``pf_ifindex`` (``pf_ifname``); ``vf``
    is the VF number there, or None for the device itself (``IFLA_PORT_SELF``).
    """

    ifname: str
    pf_ifname: str
    pf_ifindex: int
    vf: int | None

    def describe(self) -> str:
        """``eth2`` or ``VF 3 of eth1 (eth1v3)`` for messages."""
        if self.vf is None:
            return self.pf_ifname
        return f"VF {self.vf} of {self.pf_ifname} ({self.ifname})"



# --- resolving interfaces ---------------------------------------------------------------------------------


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read().strip()


def resolve_port(ifname: str, *, sysfs: str = SYSFS) -> QbhPort:
    """Where requests for ``ifname`` go: its PF and VF number when it is an SR-IOV VF, else itself.

    A VF is recognised by ``/sys/class/net/IF/device/physfn``; its number is N of the PF's ``virtfnN``
    link that points to the same PCI function, its PF is the network interface of ``physfn`` (as libvirt
    finds them).  Raises PeerUnavailable when ``ifname`` does not exist or its PF cannot be found.
    """
    if not ifname or "/" in ifname or ifname in (".", ".."):
        raise PeerUnavailable(f"'{ifname}' is not an interface name", hint="check the port's uplink")
    base = os.path.join(sysfs, "class", "net", ifname)
    if sysfs == SYSFS:
        _check_sysfs_view(ifname, base)
    if not os.path.isdir(base):
        raise PeerUnavailable(
            f"interface {ifname} does not exist on this host",
            hint="check the [uplinks] mapping in vdp-hooks.conf and 'ip link'",
        )
    physfn = os.path.join(base, "device", "physfn")
    if not os.path.exists(physfn):
        return QbhPort(ifname, ifname, _ifindex_of(ifname, sysfs), None)

    vf_dev = os.path.realpath(os.path.join(base, "device"))
    pf_dev = os.path.realpath(physfn)
    vf_number = None
    try:
        entries = os.listdir(pf_dev)
    except OSError as exc:
        raise PeerUnavailable(
            f"{ifname} is an SR-IOV VF but its PF device {pf_dev} cannot be read ({exc.strerror})",
            hint="check the PF's driver (lspci -k)",
        ) from exc
    for entry in entries:
        m = re.fullmatch(r"virtfn(\d+)", entry)
        if m and os.path.realpath(os.path.join(pf_dev, entry)) == vf_dev:
            vf_number = int(m.group(1))
            break
    if vf_number is None:
        raise PeerUnavailable(
            f"{ifname} is an SR-IOV VF but its PF {os.path.basename(pf_dev)} does not list it (no virtfnN link)",
            hint="check SR-IOV on the PF (cat .../sriov_numvfs) and the PF driver",
        )
    try:
        pf_names = sorted(os.listdir(os.path.join(pf_dev, "net")))
    except OSError:
        pf_names = []
    if len(pf_names) != 1:
        found = ", ".join(pf_names) if pf_names else "none"
        raise PeerUnavailable(
            f"{ifname} is VF {vf_number} of PCI device {os.path.basename(pf_dev)}, whose network interface "
            f"cannot be found here (interfaces: {found})",
            hint="the PF needs its driver loaded and must be in this network namespace",
        )
    pf = pf_names[0]
    return QbhPort(ifname, pf, _ifindex_of(pf, sysfs), vf_number)


def resolve_pci(address: str, *, sysfs: str = SYSFS) -> QbhPort:
    """Where requests for the VF at PCI ``address`` ("0000:03:10.2", a ``type='hostdev'`` interface) go.

    The VF is usually bound to vfio-pci and has no network interface: its PF is the network interface of
    ``/sys/bus/pci/devices/ADDR/physfn``, its number the N of the PF's ``virtfnN`` link to it (as libvirt
    finds them for hostdev port profiles).  ``ifname`` is the VF's own interface if it has one, else the
    PF's.  Raises PeerUnavailable when the device is not here or is no SR-IOV VF."""
    dev = os.path.join(sysfs, "bus", "pci", "devices", address)
    if "/" in address or not os.path.isdir(dev):
        raise PeerUnavailable(f"PCI device {address} does not exist on this host", hint="check lspci and the guest")
    physfn = os.path.join(dev, "physfn")
    if not os.path.exists(physfn):
        raise PeerUnavailable(
            f"PCI device {address} is not an SR-IOV VF (no physfn)",
            hint="802.1Qbh on a hostdev interface needs a VF of a port-profile capable adapter",
        )
    pf_dev = os.path.realpath(physfn)
    vf_dev = os.path.realpath(dev)
    vf_number = None
    with contextlib.suppress(OSError):
        for entry in os.listdir(pf_dev):
            m = re.fullmatch(r"virtfn(\d+)", entry)
            if m and os.path.realpath(os.path.join(pf_dev, entry)) == vf_dev:
                vf_number = int(m.group(1))
    pf_names = sorted(os.listdir(os.path.join(pf_dev, "net"))) if os.path.isdir(os.path.join(pf_dev, "net")) else []
    if vf_number is None or len(pf_names) != 1:
        raise PeerUnavailable(
            f"PCI device {address}: its PF {os.path.basename(pf_dev)} "
            + ("does not list it (no virtfnN link)" if vf_number is None else "has no single network interface here"),
            hint="the PF needs its driver loaded and must be in this network namespace",
        )
    own = sorted(os.listdir(os.path.join(dev, "net"))) if os.path.isdir(os.path.join(dev, "net")) else []
    pf = pf_names[0]
    return QbhPort(own[0] if own else pf, pf, _ifindex_of(pf, sysfs), vf_number)


def _check_sysfs_view(ifname: str, base: str) -> None:
    """Refuse to read sysfs that belongs to another network namespace.

    /sys shows the interfaces of the namespace that mounted it: a process that entered a network
    namespace without mounting sysfs anew (``ip netns exec`` does mount it) would read some other
    device's topology under the same name.  The interface index tells: sysfs and the kernel must agree.
    """
    try:
        kernel_index = socket.if_nametoindex(ifname)
    except OSError:
        return  # not in this namespace: reported as missing below
    try:
        sysfs_index = int(_read(os.path.join(base, "ifindex")))
    except (OSError, ValueError):
        sysfs_index = None
    if sysfs_index != kernel_index:
        raise PeerUnavailable(
            f"/sys does not show this network namespace's {ifname} (ifindex {kernel_index}, sysfs says "
            f"{sysfs_index if sysfs_index is not None else 'no such interface'})",
            hint="run in a mount namespace with sysfs mounted for this network namespace (as 'ip netns exec' does)",
        )


def _ifindex_of(ifname: str, sysfs: str) -> int:
    """The interface index: from the kernel when ``sysfs`` is the real one, else from the (fake) tree."""
    if sysfs == SYSFS:
        try:
            return socket.if_nametoindex(ifname)
        except OSError as exc:
            raise PeerUnavailable(f"interface {ifname} does not exist on this host") from exc
    try:
        return int(_read(os.path.join(sysfs, "class", "net", ifname, "ifindex")))
    except (OSError, ValueError) as exc:
        raise PeerUnavailable(f"interface {ifname}: cannot read its ifindex ({exc})") from exc


# --- host UUID ----------------------------------------------------------------------------------------------


def _parse_uuid(text: str) -> uuid.UUID | None:
    """A UUID the way libvirt accepts a host UUID (``virUUIDParse`` + ``virUUIDIsValid``), else None.

    32 hex digits, '-' or ' ' allowed between pairs, surrounding blanks ignored; all 16 bytes equal
    (zeros, ff...) is not a valid host UUID.
    """
    compact = re.sub(r"[-\s]", "", text.strip())
    if not re.fullmatch(r"[0-9a-fA-F]{32}", compact):
        return None
    value = uuid.UUID(hex=compact)
    if len(set(value.bytes)) == 1:
        return None
    return value


def host_uuid(
    configured: str | None = None,
    *,
    dmi_paths: Sequence[str] = DMI_UUID_PATHS,
    machine_id_path: str = MACHINE_ID_PATH,
) -> uuid.UUID:
    """The host UUID sent as ``IFLA_PORT_HOST_UUID``: ``configured``, else SMBIOS, else ``/etc/machine-id``.

    libvirt (``virGetHostUUID``, ``daemonSetupHostUUID``): ``host_uuid`` in libvirtd.conf / virtqemud.conf
    wins; else ``host_uuid_source`` says where to read it: ``smbios`` (default) reads
    /sys/devices/virtual/dmi/id/product_uuid then /sys/class/dmi/id/product_uuid, and if neither gives a
    valid UUID, libvirt makes up a *random* one per daemon start; ``machine-id`` reads /etc/machine-id.
    A UUID whose 16 bytes are all equal is invalid.  Here the fallback after SMBIOS is /etc/machine-id
    rather than a random value: the hook runs once per event, and a UUID that changes between
    ASSOCIATE and DISASSOCIATE would be worse than a stable one.  To send exactly libvirt's value, pass
    :func:`libvirt_host_uuid` as ``configured`` (or set host_uuid in vdp-hooks.conf).

    Raises ConfigError for a bad ``configured`` value, FeatureError when nothing gives a UUID.
    """
    if configured:
        value = _parse_uuid(configured)
        if value is None:
            raise ConfigError(f"host_uuid '{configured}' is not a valid UUID (32 hex digits, not all the same)")
        return value
    for path in dmi_paths:
        try:
            value = _parse_uuid(_read(path))
        except OSError:
            continue
        if value is not None:
            return value
    try:
        value = _parse_uuid(_read(machine_id_path))
    except OSError:
        value = None
    if value is not None:
        return value
    raise FeatureError(
        "cannot determine the host UUID for 802.1Qbh (no SMBIOS product_uuid, no valid /etc/machine-id)",
        hint="set host_uuid in the [vdp] section of vdp-hooks.conf",
    )


def libvirt_host_uuid(paths: Sequence[str] = LIBVIRT_CONFS) -> str | None:
    """``host_uuid`` from libvirt's daemon config, or /etc/machine-id's when ``host_uuid_source`` says so.

    None when neither is set (libvirt then uses SMBIOS, as :func:`host_uuid` does).  The first file that
    sets either key decides; files that do not exist are skipped.
    """
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        keys = dict(re.findall(r'(?m)^\s*(host_uuid|host_uuid_source)\s*=\s*"([^"]*)"', text))
        if keys.get("host_uuid"):
            return keys["host_uuid"]
        if keys.get("host_uuid_source") == "machine-id":
            try:
                return _read(MACHINE_ID_PATH)
            except OSError:
                return None
        if keys:
            return None
    return None
