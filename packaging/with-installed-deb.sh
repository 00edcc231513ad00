#!/bin/sh
# Run a command with the DEB installed on this machine, then purge it again (also on failure).
#
#   packaging/with-installed-deb.sh [--deb FILE] -- COMMAND [ARG...]
#
# Without --deb, builds it first (build-packages.sh --deb into build/packages/installed/).  Refuses to
# run when any version of libvirt-vdp-hooks is installed or left configuration behind: it would not be
# ours to remove.  The command sees
#   VDP_HOOKS_ENTRY=/usr/libexec/libvirt-vdp-hooks/qemu   the installed hook entry
#   VDP_HOOKS_CLI=/usr/sbin/vdp-hooks                      the installed command
# so that end-to-end tests can link the installed entry into a lab libvirtd's hooks directory
# ("$VDP_HOOKS_CLI" --hooks-dir DIR enable) instead of the source tree's.  Nothing is enabled in the
# host's /etc/libvirt/hooks.  Needs root.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export PATH

NAME=libvirt-vdp-hooks
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEB=
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) DEB=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "with-installed-deb.sh: unknown argument '$1' (usage: [--deb FILE] -- COMMAND...)" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "with-installed-deb.sh: no command given" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "with-installed-deb.sh: needs root (dpkg -i)" >&2; exit 2; }

status=$(dpkg-query -W -f '${db:Status-Status}' "$NAME" 2>/dev/null || true)
if [ -n "$status" ] && [ "$status" != not-installed ]; then
    echo "with-installed-deb.sh: $NAME is already on this machine ($status); not touching it" >&2
    exit 3
fi

if [ -z "$DEB" ]; then
    "$ROOT/packaging/build-packages.sh" --deb --workdir "$ROOT/build/packages/installed" \
        --outdir "$ROOT/build/packages/installed/out" >&2
    DEB=$(ls "$ROOT"/build/packages/installed/out/${NAME}_*_all.deb | head -n 1)
fi

purge() {
    dpkg --purge "$NAME" >&2 || echo "with-installed-deb.sh: dpkg --purge $NAME failed" >&2
}
trap purge EXIT
trap 'exit 130' INT TERM

dpkg -i "$DEB" >&2
VDP_HOOKS_ENTRY=/usr/libexec/libvirt-vdp-hooks/qemu
VDP_HOOKS_CLI=/usr/sbin/vdp-hooks
export VDP_HOOKS_ENTRY VDP_HOOKS_CLI
rc=0
"$@" || rc=$?
exit "$rc"
