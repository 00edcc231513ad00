"""Lab harness: network namespaces, daemons started and stopped by pid, lldpad, libvirtd, switch peers.

Used by the lab tests and by `make demo`.  Everything it starts lives in namespaces it created and is
stopped by pid; nothing here reads or touches the host's /run/lldpad.pid.
"""
