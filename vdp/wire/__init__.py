"""Wire formats, pure: bytes in, values out, nothing opened or sent.

``netlink``: rtnetlink link messages for 802.1Qbg (through lldpad) and 802.1Qbh (through the kernel) as
pyroute2 declarations; ``clif``: lldpad's client-interface text messages.  Both are golden-tested against
what real peers exchanged (tests/golden/, tests/unit/test_wire_*.py).
"""
