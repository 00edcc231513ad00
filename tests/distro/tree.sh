#!/usr/bin/env bash
# Another Debian release's root tree, made with debootstrap, to run this checkout's tests with *its*
# libvirt, lldpad, QEMU, Python, lxml and pyroute2.  Needs root.
#
#   tests/distro/tree.sh build SUITE DIR      debootstrap SUITE into DIR, install tests/distro/SUITE.packages,
#                                             run tests/distro/SUITE.setup in it if there is one
#   tests/distro/tree.sh provision SUITE DIR  the same on an existing tree, without debootstrap
#   tests/distro/tree.sh versions DIR         the tree's Debian, Python, lxml, pyroute2, libvirt, lldpad, QEMU
#   tests/distro/tree.sh enter DIR CMD...     run CMD with DIR as / (this checkout bind-mounted at its own path)
#   tests/distro/tree.sh remove DIR           unmount anything left below DIR and delete it
#   tests/distro/tree.sh test SUITE DIR COMMAND
#                                             build, print the versions, run the shell COMMAND in the
#                                             tree (in this checkout), remove the tree (also on failure)
#
# `enter` gives the tree its own mount and pid namespaces and makes it the root with pivot_root, not
# chroot: a chroot leaves the mount namespace's root at the host's /, and setns() into a mount namespace
# (the lab's `nsenter --mount`, `ip netns exec`) resets the root to that namespace's root -- a chrooted
# lab would run the host's lldpad.  After pivot_root the host's tree is unmounted; nothing below can
# reach it.  The pid namespace ends every process the tests leave behind when CMD exits.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

# The Debian mirror this machine's apt uses (deb822 or one-line sources), so the trees come from the same
# registry as the host's packages.
host_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    [[ -n $uri ]] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build() {
    local suite=$1 dir=$2 mirror
    mirror=$(host_mirror)
    command -v debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
    rm_tree "$dir"
    mkdir -p "$dir"
    echo "tree: debootstrap $suite from $mirror into $dir"
    debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 \
        || { tail -n 20 "$dir.debootstrap.log"; return 1; }
    provision "$suite" "$dir"
}

# Sources, no service starts, the suite's packages (again on an existing tree: apt-get is idempotent).
provision() {
    local suite=$1 dir=$2 mirror
    mirror=$(host_mirror)
    cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/}-security $suite-security main
EOF
    # Nothing starts a service at install time (libvirt-daemon on Debian 13 would start libvirtd).
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 755 "$dir/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    # Every installed Debian has one (systemd or dbus makes it); the Qbh hook, like libvirt, falls back to
    # it for the host UUID where there is no SMBIOS product_uuid (none on this VM).
    [[ -s $dir/etc/machine-id ]] || tr -d - </proc/sys/kernel/random/uuid >"$dir/etc/machine-id"
    # The CAs this machine trusts locally (an HTTPS proxy's, say): ca-certificates picks them up for pip.
    if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
        mkdir -p "$dir/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/* "$dir/usr/local/share/ca-certificates/"
    fi
    local packages
    packages=$(grep -v '^#' "$here/$suite.packages" | tr '\n' ' ')
    enter "$dir" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages \
        && if command -v update-ca-certificates >/dev/null; then update-ca-certificates; fi" \
        >"$dir.apt.log" 2>&1 || { tail -n 30 "$dir.apt.log"; return 1; }
    if [[ -x $here/$suite.setup ]]; then
        enter "$dir" "$here/$suite.setup" >"$dir.setup.log" 2>&1 || { tail -n 30 "$dir.setup.log"; return 1; }
    fi
}

enter() {
    local dir
    dir=$(cd "$1" && pwd)
    shift
    exec_in=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
        LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 CI="${CI:-}" "$@")
    unshare --mount --pid --fork --propagation private -- "$0" __inside "$dir" "${exec_in[@]}"
}

# Runs as pid 1 of the new pid namespace, in the new mount namespace, at first still seeing the host's /.
inside() {
    local dir=$1
    shift
    mount --bind "$dir" "$dir"                      # pivot_root wants the new root to be a mount point
    mount -t proc proc "$dir/proc"
    mount --rbind /sys "$dir/sys"                   # with the cgroup mounts libvirtd needs
    mount --rbind /dev "$dir/dev"                   # /dev/kvm, /dev/net/tun
    mount -t tmpfs -o mode=1777 tmpfs "$dir/dev/shm"
    mount -t tmpfs -o mode=755 tmpfs "$dir/run"
    mkdir -p "$dir/run/lock" "$dir$src"
    mount --bind "$src" "$dir$src"
    mkdir -p "$dir/.oldroot"
    cd "$dir"
    pivot_root . .oldroot
    umount -l /.oldroot
    rmdir /.oldroot
    cd "$src"
    # Stay as the namespace's init: libvirtd daemonizes QEMU, whose parent becomes pid 1 here; a pid 1
    # that does not reap (pytest) leaves killed QEMUs as zombies that libvirtd waits for in vain.  bash
    # reaps every child on SIGCHLD.
    "$@" &
    local child=$!
    trap 'kill -TERM "$child"' TERM INT HUP
    wait "$child"
}

# A tree may still have mounts if an `enter` was killed hard; never rm -rf through a bind mount.
rm_tree() {
    local dir=$1
    [[ -e $dir ]] || return 0
    dir=$(cd "$dir" && pwd)
    if findmnt -rn -o TARGET | grep -q "^$dir/"; then
        findmnt -rn -o TARGET | grep "^$dir/" | sort -r | xargs -r -n1 umount -l
    fi
    rm -rf --one-file-system "$dir"
    rm -f "$dir".*.log
}

# What the tests ran with, for the CI log and the closing notes.
versions() {
    enter "$1" sh -c 'echo "Debian $(cat /etc/debian_version)"
        python3 -c "import sys, lxml.etree, pyroute2
print(\"python3\", sys.version.split()[0]); print(\"lxml\", lxml.etree.__version__); print(\"pyroute2\", pyroute2.__version__)"
        dpkg-query -W -f "\${Package} \${Version}\n" python3-pyroute2 libvirt-daemon lldpad qemu-system-x86 2>/dev/null || true'
}

run_tests() {
    local suite=$1 dir=$2 command=$3 start=$SECONDS rc=0
    trap "rm_tree $(printf %q "$dir")" EXIT   # expanded now: \$dir is local
    build "$suite" "$dir"
    echo "tree: $suite built in $((SECONDS - start)) s"
    versions "$dir"
    local t=$SECONDS
    enter "$dir" sh -c "$command" || rc=$?
    echo "tree: $suite tests took $((SECONDS - t)) s (exit $rc); $((SECONDS - start)) s in all"
    return "$rc"
}

case ${1:-} in
build) build "$2" "$3" ;;
provision) provision "$2" "$3" ;;
enter) shift; enter "$@" ;;
remove) rm_tree "$2" ;;
versions) versions "$2" ;;
test) shift; run_tests "$@" ;;
__inside) shift; inside "$@" ;;
*) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
