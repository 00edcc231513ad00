"""802.1Qbh port profiles (Cisco VM-FEX / enic) through the kernel.

``host``: where a port's requests go (sysfs PF/VF resolution) and the host UUID, the way libvirt finds
them; ``client``: :class:`~vdp.qbh.client.QbhClient`, the netlink client (link down/up, SETLINK, poll,
timeout -> DISASSOCIATE).  Nothing is imported here, so a caller pays only for the part it uses.
"""
