"""Where the packages go when pip installs them: under one name of ours (libvirt_vdp_hooks/), never as
top-level ``hooks`` and ``vdp`` in a shared site-packages (see libvirt_vdp_hooks/__init__.py).

Everything else is declared in setup.cfg; only this mapping is computed, so that a new subpackage of
hooks/ or vdp/ is installed without anyone having to list it.
"""

from setuptools import find_packages, setup

PREFIX = "libvirt_vdp_hooks"
CODE = find_packages(include=["hooks", "hooks.*", "vdp", "vdp.*"])

setup(
    packages=[PREFIX] + [f"{PREFIX}.{name}" for name in CODE],
    package_dir={PREFIX: PREFIX, f"{PREFIX}.hooks": "hooks", f"{PREFIX}.vdp": "vdp"},
)
