"""The libvirt-facing framework of libvirt-vdp-hooks.

Modules -- the hook: ``boot`` (every start-up trick, and their off switch), ``ops`` (the table of libvirt
operations), ``event`` (argv + domain XML -> immutable Event; the generic ``<vdp:port>`` envelope),
``config`` (host INI file), ``policy`` (Policy.decide: what is required, and who said so), ``plan`` (pure:
declaration vetoes, usable ports, acting features; the hook and ``replay --dry-run`` alike), ``feature``
(the feature contract and registry), ``journal`` (crash-safe state per guest), ``transaction`` (setup with
rollback, verify, release), ``runner`` (one invocation), ``links`` (built-in feature), ``errors``,
``deadline``, ``plain``, ``log``.  The agent: ``agent`` (the daemon's loop), ``agentwork`` (its per-guest
work), ``agentclif`` (lldpad's client events), ``reconcile`` (journals vs lldpad vs libvirt),
``domainevents`` and ``libvirtsync`` (libvirt's events and what they cause), ``metrics`` (Prometheus text),
``agentfile`` (agent.json).  For the admin:
``cli`` (argparse and the small commands), ``hostcheck`` (``vdp-hooks check``), ``statusview``
(``vdp-hooks status``).

Installed by pip, this package lives inside ``libvirt_vdp_hooks/`` (see there), never top-level.
"""

__all__ = ["NAMESPACE", "STATE_DIR_DEFAULT", "__version__"]

__version__ = "0.1.0"

#: The XML namespace of our <metadata> element; matched by URI, never by prefix.
NAMESPACE = "http://libvirt-vdp-hooks.org/xmlns"

#: Where journals live: under /run/libvirt so the directory inherits libvirt's security labels.
STATE_DIR_DEFAULT = "/run/libvirt/vdp-hooks"
