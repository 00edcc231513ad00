"""The VDP feature: 802.1Qbg through lldpad and 802.1Qbh through the kernel.

Modules: ``feature`` (the hook feature: options, what each operation does, kind -> backend), ``ports``
(the typed ports, their journal form, the request enum), ``qbg/`` (802.1Qbg: session, netlink dialogue,
client interface, preflight, per-uplink scheduling), ``profiles`` (the 802.1Qbh backend) over ``qbh/``
(``qbh.host``: sysfs PF/VF and host UUID; ``qbh.client``: kernel client for port profiles), ``native``
(ports libvirt associates itself, for the preflight), ``checks`` (preflight and uplink checks), ``wire/``
(pure codecs: ``wire.netlink`` netlink messages as pyroute2 nla classes, ``wire.clif`` lldpad's
client-interface text, ``wire.codes`` the numbers), ``messages`` (every status/errno as one admin line),
``networks`` (libvirt networks with port profiles).  (``lldpad``, the compatibility shim over
``qbg.netlink`` and ``qbg.session``, is gone: import those.)
"""
