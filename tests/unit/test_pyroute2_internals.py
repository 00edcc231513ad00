"""The pyroute2 internals vdp.wire.netlink relies on.  If a pyroute2 release changes them, these fail first.

vdp.wire.netlink imports ``pyroute2.netlink`` without running ``pyroute2/__init__.py`` (150-200 ms, most of a
hook's budget) and subclasses ``nla``/``nlmsg`` with ``nla_map`` 4-tuples and nested classes.  Each test
says which assumption broke.  Run under both interpreters (Debian's pyroute2 0.7.x and the newest).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from vdp.wire import netlink as vn

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (this one may have pyroute2 loaded); it prints one JSON line."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_bypass_does_not_run_package_init() -> None:
    got = _fresh(
        "import sys, json, vdp.wire.netlink as n\n"
        "mods = sorted(m for m in sys.modules if m.startswith('pyroute2'))\n"
        "print(json.dumps({'mods': mods, 'netlink': n._netlink.__file__, 'heavy': [m for m in sys.modules\n"
        "  if m in ('sqlite3', 'pyroute2.iproute', 'pyroute2.ndb', 'pyroute2.ipdb', 'asyncio')]}))"
    )
    assert "pyroute2" not in got["mods"], "the placeholder package must not stay in sys.modules"
    assert "pyroute2.netlink" in got["mods"]  # type: ignore[operator]
    # Only these may load; a new import in pyroute2/netlink/__init__.py shows up here (check its cost).
    allowed = {"pyroute2.common", "pyroute2.netlink", "pyroute2.netlink.exceptions", "pyroute2.netlink.buffer",
               "pyroute2.netlink.marshal", "pyroute2.netlink.core", "pyroute2.netlink.coredata"}
    assert set(got["mods"]) <= allowed, f"pyroute2.netlink now imports more: {got['mods']}"  # type: ignore[arg-type]
    assert got["heavy"] == [], "pyroute2.netlink pulls in heavy modules: the import-cost bypass is void"
    assert str(got["netlink"]).endswith("pyroute2/netlink/__init__.py")


def test_real_import_after_bypass_still_works() -> None:
    got = _fresh(
        "import json, vdp.wire.netlink as n, pyroute2, pyroute2.netlink as pn\n"
        "print(json.dumps({'iproute': hasattr(pyroute2, 'IPRoute'), 'same': pn is n._netlink,\n"
        "  'init': pyroute2.__file__}))"
    )
    assert got["iproute"], "import pyroute2 after vdp.wire.netlink must give the full package"
    assert got["same"], "the submodule loaded by the bypass must be reused, not loaded twice"
    assert str(got["init"]).endswith("pyroute2/__init__.py")


def test_bypass_reuses_an_already_imported_pyroute2() -> None:
    got = _fresh(
        "import json, pyroute2, pyroute2.netlink as pn, vdp.wire.netlink as n\n"
        "print(json.dumps({'same': n._netlink is pn, 'cls': n.nla is pn.nla}))"
    )
    assert got == {"same": True, "cls": True}


def test_import_cost_is_small() -> None:
    """Informative and loose: the bypass exists because ``import pyroute2`` costs 150-200 ms."""
    got = _fresh(
        "import time, json; t = time.perf_counter(); import vdp.wire.netlink\n"
        "a = time.perf_counter() - t\n"
        "print(json.dumps({'ms': a * 1000}))"
    )
    print(f"import vdp.wire.netlink: {got['ms']:.1f} ms")
    assert float(got["ms"]) < 120.0  # type: ignore[arg-type]


def test_base_class_api() -> None:
    _netlink = vn._netlink  # the module object the bypass produced
    assert _netlink.NLA_F_NESTED == 0x8000
    for name in ("nla", "nlmsg"):
        assert isinstance(getattr(_netlink, name, None), type), f"pyroute2.netlink.{name} is gone"
    atoms = ("asciiz", "uint8", "uint16", "uint32")
    for atom in atoms:
        assert hasattr(_netlink.nla, atom), f"nla.{atom} (an nla_map type name) is gone"
    for method in ("encode", "decode", "get_attr", "get_attrs"):
        assert callable(getattr(_netlink.nlmsg, method, None)), f"nlmsg.{method} is gone"


def test_nla_map_flags_and_nested_lookup() -> None:
    """4-tuple nla_map entries OR their flags into the type; nested classes are found by name."""

    class Msg(vn.nlmsg):  # type: ignore[misc]
        fields = (("x", "I"),)
        nla_map = ((7, "A", "inner", 0x8000), (9, "B", "uint8"))

        class inner(vn.nla):  # type: ignore[misc]  # noqa: N801
            fields = (("v", "3s"), ("w", "B"))

    m = Msg()
    m["header"]["type"] = 19
    m["x"] = 1
    m["attrs"] = [("A", {"v": b"abc", "w": 4}), ("B", 2)]
    m.encode()
    raw = bytes(m.data[: m["header"]["length"]])
    assert raw[16:].hex() == "01000000" "0800" "0780" "61626304" "0500" "0900" "02000000", (
        "nla_map flags / struct fields / padding encode differently"
    )
    back = Msg(raw)
    back.decode()
    assert back.get_attr("A")["v"] == b"abc", "nested class decode by name changed"
    assert back.get_attr("B") == 2
    assert back["x"] == 1


def test_single_value_field_decodes_to_bytes() -> None:
    """An nla whose only field is ``value``: get_attr yields the value or the dict (vdp.wire.netlink copes
    with both)."""
    raw = vn.encode_qbh_request(seq=1, port_id=0, ifindex=1, vf=None, mac=None, profile="p",
                                instance=uuid.UUID(int=5), host_uuid=uuid.UUID(int=6), request=vn.ASSOCIATE)
    msg = vn.LinkMsg(raw)
    msg.decode()
    got = msg.get_attr("IFLA_PORT_SELF").get_attr("IFLA_PORT_INSTANCE_UUID")
    raw_uuid = got if isinstance(got, (bytes, bytearray)) else got["value"]
    assert bytes(raw_uuid) == uuid.UUID(int=5).bytes
