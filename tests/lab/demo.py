"""``make demo``: two libvirt hosts, lldpad, one 802.1Qbg switch, and libvirt-vdp-hooks as their hook.

Run as root from the source tree: ``python3 -m tests.lab.demo`` (the Makefile's ``demo`` target).  It
builds the lab of :mod:`tests.lab.harness.e2e`, then narrates: a guest started on host A with its switch
ports, a live migration to B with timings, the switch refusing host A's port and the migration back being
vetoed (libvirt's own error text), the guest still running on B and nothing leaked on A; then the switch
de-associates one of the guest's ports on B and ``vdp-hooks agent``, started there, associates it again with
no hook run (stopped by pid afterwards).  It tears the lab down and exits non-zero if any step did not
behave as narrated.  ``--keep`` keeps the work directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from tests.lab.harness.agentrun import AgentProcess
from tests.lab.harness.e2e import E2EHost, E2ELab, EventWatch, Guest, pids_alive

__all__ = ["main"]


class DemoFailed(Exception):
    """A step did not behave as narrated."""


class Narrator:
    """Plain lines, each stamped with the seconds since the demo began."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, text: str, *, more: str = "") -> None:
        """One narrated step (wrapped to 110 columns); ``more`` is quoted verbatim below it, indented."""
        stamp = f"[{time.monotonic() - self.t0:5.1f}s] "
        print(textwrap.fill(text, 110, initial_indent=stamp, subsequent_indent=" " * len(stamp),
                            break_long_words=False, break_on_hyphens=False), flush=True)
        if more:
            print(textwrap.fill(more, 110, initial_indent=" " * 12, subsequent_indent=" " * 12,
                                break_long_words=False, break_on_hyphens=False), flush=True)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise DemoFailed(what)


def _ports(host: E2EHost, guest: Guest) -> str:
    table = host.switch_table()
    parts = []
    for port in guest.ports:
        instance = port.params["instanceid"]
        entry = table.get(instance)
        state = f"{entry['mode']} vlan {entry['filters'][0]['vlan']}" if entry else "absent"
        parts.append(f"{port.mac} -> {state}")
    return "; ".join(parts)


def _associated(host: E2EHost, guest: Guest) -> bool:
    instances = set(guest.instances())
    table = host.switch_table()
    return instances <= host.vsi_uuids() and all(table.get(i, {}).get("mode") == "assoc" for i in instances)


def _leaked(host: E2EHost, guest: Guest) -> list[str]:
    """What ``host`` still holds for ``guest`` (empty: nothing)."""
    found = []
    if guest.name in host.domains():
        found.append("a domain")
    if set(guest.instances()) & host.vsi_uuids():
        found.append("VSIs in its lldpad")
    if set(guest.instances()) & set(host.switch_table()):
        found.append("VSIs at its switch port")
    if host.state_dir.is_dir() and [p for p in host.state_dir.iterdir() if guest.uuid in p.name]:
        found.append("a journal")
    return found


def _hook_ms(host: E2EHost, mark: int, guest: Guest) -> str:
    share = E2ELab.hook_share(host.hook_lines(mark), guest)
    return f"{sum(share.values()):.0f} ms: " + ", ".join(f"{op} {ms:.0f}" for op, ms in share.items())


def _wait(predicate: Callable[[], object], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def _agent(host: E2EHost, workdir: Path, say: Narrator) -> Iterator[AgentProcess]:
    """``vdp-hooks agent`` on ``host`` (its namespaces, the hook's environment), stopped by pid on the way out."""
    assert host.libvirt.daemon is not None
    agent = AgentProcess(host.libvirt.daemon, host, workdir / f"agent-{host.key}.out")
    try:
        yield agent
    finally:
        rc = agent.stop()
    check(rc == 0, f"the agent exited with {rc}")
    say.say(f"agent stopped by pid (exit {rc})")


_RECONCILE_S = 3600  # the demo's [agent] reconcile_interval (60 s by default): not what repairs the port


def _switch_drops(lab: E2ELab, instance: str) -> float:
    """The switch de-associates ``instance`` on its own (switch-initiated DISASSOCIATE); its clock then."""
    before = len(lab.peer.events("switch-deassoc"))
    lab.peer.control({"commands": [{"id": f"demo-drop-{instance}-{time.monotonic_ns()}", "deassoc": instance}]})
    event = lab.peer.wait_event(
        lambda e: e["event"] == "switch-deassoc" and e["instance"] == instance
        and len(lab.peer.events("switch-deassoc")) > before,
        10, "switch de-associates",
    )
    return float(event["time"])


def _agent_repair(lab: E2ELab, host: E2EHost, guest: Guest, workdir: Path, say: Narrator) -> int:
    """The running agent re-associates a port the switch de-associated, with no hook run; returns its pid.

    The guest came to ``host`` by a migration, so its hook associated the ports with VDP22 migration hints,
    through lldpad's client interface; lldpad sends its notice about such a VSI (switch de-associated) to no
    netlink listener, but to every attached client-interface connection (measured), and the agent keeps
    one: that event is what finds the loss.  The reconcile interval is set to an hour here, so the periodic
    reconcile of the journals with lldpad's VSI tables (60 s by default) cannot be what repairs it.
    """
    port = guest.ports[0]
    instance = port.params["instanceid"]
    host.set_config(f"[agent]\nreconcile_interval = {_RECONCILE_S}s\n")
    with _agent(host, workdir, say) as agent:
        say.say(f"vdp-hooks agent running on {host.name} (pid {agent.pid}), in its namespaces with the hook's "
                f"config and state directory, attached to lldpad's client interface; its reconcile runs every "
                f"{_RECONCILE_S // 60} min here (only at start in this demo)")
        mark = host.log_mark()
        dropped = _switch_drops(lab, instance)
        say.say(f"the switch de-associated {port.mac} on its own (switch-initiated DISASSOCIATE at "
                f"{host.switch_port()})")

        def again() -> list[dict[str, Any]]:
            return [e for e in lab.switch_requests(host, since=dropped, instances=[instance])
                    if e["mode"] == "assoc" and e["answer"] == "success"]

        check(_wait(again, 30) and _wait(lambda: instance in host.switch_table(), 30),
              f"the agent did not associate {port.mac} again at {host.switch_port()} within 30 s")
        ms = (float(again()[0]["time"]) - dropped) * 1000
        check(_wait(lambda: any("associated again" in ln.message for ln in host.hook_lines(mark)), 10),
              "the agent did not log the repair")
        lines = host.hook_lines(mark)
        hooks = sorted({ln.fields["op"] for ln in lines if ln.fields and not ln.fields["op"].startswith("agent")})
        check(not hooks, f"a hook ran during the repair: {hooks}")
        check(_associated(host, guest), f"the guest's ports on {host.name} are not all associated after the repair")
        logged = [ln.text for ln in lines if "associated again" in ln.message]
        heard = [ln.text for ln in lines if "client interface reports VSI" in ln.message]
        check(bool(heard), "the agent did not log lldpad's client-interface event")
        say.say(f"no hook ran; lldpad's client-interface event told the agent {port.mac} was lost:", more=heard[0])
        say.say("and the agent re-associated it:", more=logged[0])
        say.say(f"{port.mac} associated again at {host.switch_port()}: {ms:.0f} ms from the switch's "
                f"DISASSOCIATE to its re-ASSOCIATE; ports now: "
                f"{_ports(host, guest)}")
    return agent.pid


def run(workdir: Path, say: Narrator) -> None:
    t = time.monotonic()
    with E2ELab(workdir) as lab:
        a, b = lab.a, lab.b
        pids = [*lab.vdp.all_pids(), lab.peer.daemon.pid, a.libvirt.pid, b.libvirt.pid]
        netns = lab.vdp.netns_names()
        say.say(
            f"lab up in {time.monotonic() - t:.1f} s: host A (libvirtd, lldpad, uplink {a.uplink} -> switch port "
            f"{a.switch_port()}), host B (uplink {b.uplink} -> {b.switch_port()}); EVB/VDP running on both"
        )
        say.say("both hosts map the guest's logical uplink 'fabric-a' to their own interface "
                f"({a.uplink} on A, {b.uplink} on B) in /etc/libvirt/vdp-hooks.conf")

        guest = lab.guest("web1", nics=3, managed=2)
        guest.name = "web1"
        mark = a.log_mark()
        r, seconds = a.create(guest)
        check(r.returncode == 0, f"virsh create on A failed: {r.stderr.strip()}")
        check(_associated(a, guest), "the guest's ports are not associated on A")
        say.say(f"guest web1 started on A in {seconds:.2f} s (hook {_hook_ms(a, mark, guest)}); "
                f"3 NICs, 2 with switch ports: {_ports(a, guest)} at {a.switch_port()}")

        mark = b.log_mark()
        with EventWatch(b) as events:
            r, seconds = lab.migrate(a, b, guest.name)
            check(r.returncode == 0, f"live migration A -> B failed: {r.stderr.strip()}")
            time.sleep(0.2)
        resumed = [ts for ts, _, text in events.events(guest.name) if text.startswith("Resumed")]
        on_b = lab.switch_requests(b, instances=guest.instances())
        check(bool(resumed) and [e["mode"] for e in on_b].count("assoc") == len(guest.ports)
              and max(e["time"] for e in on_b) < min(resumed),
              "B did not associate before the guest resumed")
        check(_associated(b, guest) and not _leaked(a, guest),
              "after the migration the ports are not where the guest is")
        say.say(f"live migration A -> B in {seconds:.2f} s (B's hook {_hook_ms(b, mark, guest)}); "
                "B reserved (pre-associate RR) then associated before the guest resumed; A disassociated")
        say.say(f"switch now: {b.switch_port()}: {_ports(b, guest)}; {a.switch_port()}: nothing")

        lab.refuse(a, "insufficient-resources")
        say.say(f"the switch now refuses every request on host A's port {a.switch_port()} (insufficient resources)")
        mark = a.log_mark()
        with EventWatch(b) as events:
            r, seconds = lab.migrate(b, a, guest.name)
            time.sleep(0.3)
        lab.accept_all()
        check(r.returncode != 0, "the migration back to A was not vetoed")
        check("libvirt-vdp-hooks:" in r.stderr, f"virsh's error does not carry the hook's reason: {r.stderr.strip()}")
        say.say(f"live migration B -> A vetoed after {seconds:.2f} s (A's hook {_hook_ms(a, mark, guest)}); "
                "virsh said:", more=r.stderr.strip())
        state = b.domstate(guest.name)
        check(state == "running (migrated)" and events.events(guest.name) == [],
              f"the guest on B is '{state}', events {events.events(guest.name)}")
        check(_associated(b, guest), "the guest's ports on B were touched")
        say.say(f"web1 still running on B ({state}), never paused; its ports at {b.switch_port()}: {_ports(b, guest)}")
        leaked = _leaked(a, guest)
        check(not leaked, f"host A kept {', '.join(leaked)}")
        say.say("nothing leaked on A: no domain, no VSI in its lldpad or at its switch port, no journal")
        pids.append(_agent_repair(lab, b, guest, workdir, say))
        b.destroy(guest.name)
        check(not _leaked(b, guest), "destroying the guest on B left something behind")
    check(not pids_alive(pids), f"processes left running: {pids_alive(pids)}")
    check(not [n for n in netns if os.path.exists(f"/run/netns/{n}")], "network namespaces left behind")
    say.say("guest destroyed (B released its ports); lab torn down: every process stopped, namespaces deleted")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs of every daemon)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (network namespaces, lldpad, libvirtd); run 'sudo make demo'", file=sys.stderr)
        return 2
    for tool in ("/usr/sbin/libvirtd", "/usr/sbin/lldpad", "/usr/bin/qemu-system-x86_64", "/usr/bin/virsh"):
        if not os.access(tool, os.X_OK):
            print(f"demo: {tool} is missing; run 'make deps' (installs .ci/apt-packages)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="vdph-demo-"))
    say = Narrator()
    print("libvirt-vdp-hooks demo: two libvirt hosts with lldpad on one 802.1Qbg switch, this product as their hook")
    ok = False
    try:
        run(workdir, say)
        ok = True
    except DemoFailed as exc:
        say.say(f"FAILED: {exc}")
    except Exception as exc:  # a broken lab is a failed demo too; say what broke
        say.say(f"FAILED: {type(exc).__name__}: {exc}")
    finally:
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}")
    if ok:
        say.say("demo done")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
