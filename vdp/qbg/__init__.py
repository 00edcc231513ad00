"""802.1Qbg through lldpad: ``session`` (one per feature call: lldpad discovery, both transports, the
per-uplink scheduler), ``netlink`` (lldpad's netlink dialogue for VSIs), ``clif`` (its client interface,
through liblldp_clif), ``preflight`` (EVB, VDP mode, lldpad reachable), ``uplinklock`` / ``budget`` (one
request in flight per uplink across processes, fitted to the deadline), ``readiness`` (an lldpad that has
just started)."""
