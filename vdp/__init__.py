"""The VDP feature: 802.1Qbg through lldpad and 802.1Qbh through the kernel.

Modules: ``wire`` (pure codecs: ``wire.netlink`` netlink messages as pyroute2 nla classes, ``wire.clif``
lldpad's client-interface text), ``lldpad`` (netlink client for Qbg), ``clif`` (ctypes binding to
liblldp_clif), ``qbh`` (``qbh.host``: sysfs PF/VF and host UUID; ``qbh.client``: kernel client for port
profiles), ``feature`` (the hook feature mapping libvirt events to requests).
"""
