"""libvirt-vdp-hooks as pip installs it: the only top-level name it puts into site-packages.

The code's own packages, ``hooks`` and ``vdp``, are installed inside this directory, not beside it, so that
nobody else's ``hooks`` or ``vdp`` shadows ours, nor ours theirs.  Importing this package puts its
directory first on ``sys.path`` -- in the process that asked for it only, as the distribution packages'
launcher and entry do with /usr/share/libvirt-vdp-hooks.  The console script ``vdp-hooks`` and the hook
entry (etc-libvirt-hooks/qemu, when it finds neither a source tree nor the packages' directory) do.

In the source tree this directory holds only this file (setup.py maps hooks/ and vdp/ into it).
"""

import os
import sys

__all__ = ["LIB", "main"]

#: The directory holding hooks/ and vdp/ once installed.
LIB = os.path.dirname(os.path.abspath(__file__))
if LIB not in sys.path:
    sys.path.insert(0, LIB)


def main() -> int:
    """The console script ``vdp-hooks``."""
    from hooks.cli import main as cli_main

    return cli_main()
