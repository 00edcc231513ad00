"""The libvirt-facing framework of libvirt-vdp-hooks.

Modules: ``boot`` (every start-up trick of the hook, and their off switch), ``event`` (argv + domain XML
-> immutable Event), ``config`` (host INI file), ``feature`` (the feature contract and registry), ``policy``
(what is required), ``journal`` (crash-safe state per guest), ``transaction`` (setup, rollback, teardown),
``runner`` (one hook invocation), ``log``; for the admin: ``cli`` (argparse and the small commands),
``hostcheck`` (``vdp-hooks check``), ``statusview`` (``vdp-hooks status``).

Installed by pip, this package lives inside ``libvirt_vdp_hooks/`` (see there), never top-level.
"""

__all__ = ["NAMESPACE", "STATE_DIR_DEFAULT", "__version__"]

__version__ = "0.1.0"

#: The XML namespace of our <metadata> element; matched by URI, never by prefix.
NAMESPACE = "http://libvirt-vdp-hooks.org/xmlns"

#: Where journals live: under /run/libvirt so the directory inherits libvirt's security labels.
STATE_DIR_DEFAULT = "/run/libvirt/vdp-hooks"
