#!/bin/sh
# Build the libvirt-vdp-hooks distribution packages from this source tree into dist/.
#
#   packaging/build-packages.sh [--deb] [--rpm] [--lint] [--no-check] [--version VERSION] [--outdir DIR]
#                               [--workdir DIR]
#
# Without --deb/--rpm both are built.  --no-check skips the RPM's %check (the unit tests, ~1 min).  --lint runs lintian / rpmlint on the results (non-zero exit on
# any error or warning not overridden).  --version builds another version of the same tree (the upgrade
# test uses it), e.g. 0.1.0+1; the default is setup.cfg's version.
#
# The sources are the files git knows (tracked, or untracked and not ignored), so build products, venvs
# and lab state never end up in a package; outside a git checkout (or without git), the whole tree minus
# what .gitignore names.  Work happens under build/packages/ (ignored by git), or --workdir.
# The RPM's source tarball (NAME-VERSION.tar.gz, also in dist/) is made from those staged sources before
# anything is built in them.
#
# DEB: dpkg-buildpackage -us -uc -b, with packaging/debian copied to the staged tree's debian/.
# RPM: rpmbuild -ba --nodeps (binary and source RPM) with the few Fedora macros this machine lacks defined
#      on the command line (see packaging/README.md; a real Fedora/EPEL build uses python3-rpm-macros /
#      systemd-rpm-macros).
set -eu

# Distribution builds use the distribution's interpreter and tools, never a python3 from a venv or pyenv
# that happens to be first on PATH.
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export PATH

NAME=libvirt-vdp-hooks
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=$ROOT/dist
WORK=$ROOT/build/packages
VERSION=
DO_DEB=
DO_RPM=
LINT=
NOCHECK=

while [ $# -gt 0 ]; do
    case "$1" in
        --deb) DO_DEB=yes ;;
        --rpm) DO_RPM=yes ;;
        --lint) LINT=yes ;;
        --no-check) NOCHECK=--nocheck ;;
        --version) VERSION=$2; shift ;;
        --outdir) OUTDIR=$2; shift ;;
        --workdir) WORK=$2; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "build-packages.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$DO_DEB" ] && [ -z "$DO_RPM" ]; then
    DO_DEB=yes
    DO_RPM=yes
fi
if [ -z "$VERSION" ]; then
    VERSION=$(sed -n 's/^version *= *//p' "$ROOT/setup.cfg" | head -n 1)
fi
case "$VERSION" in
    ''|*[!0-9A-Za-z.+~]*) echo "build-packages.sh: bad version '$VERSION'" >&2; exit 2 ;;
esac

need() {
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "build-packages.sh: '$tool' is missing; on Debian: apt-get install" \
                 "dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools" \
                 "rpm lintian rpmlint" >&2
            exit 3
        fi
    done
}

# Inputs that the packages install; fail early with a clear list rather than half-way through a build.
missing=
for f in etc-libvirt-hooks/qemu etc-libvirt-hooks/vdp-hooks.conf hooks/__init__.py vdp/__init__.py \
         README.md LICENSE packaging/vdp-hooks packaging/man/vdp-hooks.8 packaging/man/vdp-hooks.conf.5 \
         packaging/tmpfiles.d/$NAME.conf; do
    [ -e "$ROOT/$f" ] || missing="$missing $f"
done
if [ -n "$missing" ]; then
    echo "build-packages.sh: missing from the source tree:$missing" >&2
    exit 4
fi

mkdir -p "$WORK" "$OUTDIR"
WORK=$(cd "$WORK" && pwd)
OUTDIR=$(cd "$OUTDIR" && pwd)
SRC=$WORK/$NAME-$VERSION
# Only what earlier runs of this script left there; --workdir may be shared with other things.
rm -rf "$SRC" "$WORK/rpm" "$WORK/${NAME}_"*
mkdir -p "$SRC"

# Stage the sources.
cd "$ROOT"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard \
        | xargs -0 sh -c 'for f; do
              case "$f" in .pybuild/*|build/*|dist/*|*.egg-info/*|*/__pycache__/*) continue ;; esac
              [ -e "$f" ] && printf "%s\0" "$f"
          done' sh \
        | cpio --null -pdm --quiet "$SRC"
else
    # Without git (e.g. a tree with no git installed): everything but what .gitignore names.
    tar -C "$ROOT" --exclude=./build --exclude=./dist --exclude=./.git --exclude=./.venv --exclude=./lab-state \
        --exclude=.pybuild --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.pyc' --exclude=.pytest_cache \
        --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.hypothesis -cf - . | tar -C "$SRC" -xf -
fi
# The source tarball, from the staged sources as they are now (the DEB build below writes .pybuild/,
# build/, *.egg-info and debian/ into them).
TARBALL=$WORK/$NAME-$VERSION.tar.gz
tar -C "$WORK" --owner=0 --group=0 --numeric-owner -czf "$TARBALL" "$NAME-$VERSION"
# "vdp-hooks --version" shows the version the package is built as (the RPM's %install does the same).
sed -i "s/^__version__ = .*/__version__ = \"$VERSION\"/" "$SRC/hooks/__init__.py"

if [ -n "$DO_DEB" ]; then
    need dpkg-buildpackage dh dh_python3
    cp -a "$ROOT/packaging/debian" "$SRC/debian"
    changelog_version=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
    if [ "$changelog_version" != "$VERSION" ]; then
        # A rebuild of the same tree under another version (e.g. for the upgrade test).
        {
            printf '%s (%s) unstable; urgency=medium\n\n' "$NAME" "$VERSION"
            printf '  * Rebuild of the source tree as version %s.\n\n' "$VERSION"
            printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Maintainer)" \
                "$(date -R)"
            cat "$SRC/debian/changelog"
        } > "$SRC/debian/changelog.new"
        mv "$SRC/debian/changelog.new" "$SRC/debian/changelog"
    fi
    (cd "$SRC" && dpkg-buildpackage -us -uc -b)
    deb=$WORK/${NAME}_${VERSION}_all.deb
    cp "$deb" "$OUTDIR/"
    echo "built $OUTDIR/$(basename "$deb")"
    if [ -n "$LINT" ]; then
        need lintian
        lintian --fail-on error,warning --info "$deb"
    fi
fi

if [ -n "$DO_RPM" ]; then
    need rpmbuild checkmodule semodule_package
    TOP=$WORK/rpm
    mkdir -p "$TOP/SOURCES" "$TOP/SPECS"
    cp "$TARBALL" "$TOP/SOURCES/"
    cp "$TARBALL" "$OUTDIR/"
    # Version: of the spec follows --version (a rebuild of the same tree); the spec's own is setup.cfg's.
    sed "s/^Version:\(  *\).*/Version:\1$VERSION/" "$ROOT/packaging/rpm/$NAME.spec" > "$TOP/SPECS/$NAME.spec"
    # __os_install_post: of the brp scripts only brp-compress (man pages) matters for this noarch package,
    # and it needs bash (Fedora's /bin/sh; Debian's is dash, so its "#!/bin/sh" fails there).
    # Stand-ins for macros that Fedora's python3-rpm-macros, python-srpm-macros and systemd-rpm-macros
    # define (not packaged for Debian).  Same meaning, simpler bodies; see packaging/README.md.
    rpmbuild -ba --nodeps $NOCHECK \
        --define "_topdir $TOP" \
        --define "__python3 /usr/bin/python3" \
        --define "python3 /usr/bin/python3" \
        --define "python3_version $(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
        --define "py_byte_compile() %1 -m compileall -q -f -o 0 -o 1 --hardlink-dupes -s %{buildroot} -p / %2" \
        --define "_tmpfilesdir /usr/lib/tmpfiles.d" \
        --define "tmpfiles_create() /usr/bin/systemd-tmpfiles --create %{?*} >/dev/null 2>&1 || :" \
        --define "_unitdir /usr/lib/systemd/system" \
        --define "systemd_preun() if [ \$1 -eq 0 ] && [ -x /usr/bin/systemctl ]; then /usr/bin/systemctl --no-reload disable --now %{?*} >/dev/null 2>&1 || :; fi" \
        --define "systemd_postun() if [ \$1 -ge 1 ] && [ -x /usr/bin/systemctl ]; then /usr/bin/systemctl daemon-reload >/dev/null 2>&1 || :; fi" \
        --define "_libexecdir /usr/libexec" \
        --define "_sharedstatedir /var/lib" \
        --define "dist %{nil}" \
        --define "__os_install_post /bin/bash /usr/lib/rpm/brp-compress %{_prefix}" \
        "$TOP/SPECS/$NAME.spec"
    rpm=$(find "$TOP/RPMS" -name "$NAME-*.noarch.rpm" | head -n 1)
    srpm=$(find "$TOP/SRPMS" -name "$NAME-*.src.rpm" | head -n 1)
    cp "$rpm" "$srpm" "$OUTDIR/"
    echo "built $OUTDIR/$(basename "$rpm") $OUTDIR/$(basename "$srpm")"
    if [ -n "$LINT" ]; then
        # RPMLINT: another rpmlint to try (e.g. a newer one from a venv); the default is the system's.
        RPMLINT=${RPMLINT:-rpmlint}
        need "$RPMLINT"
        # The project's filters, plus those only this rpmlint version needs (newer versions report a
        # filter that matched nothing as an error, so no file may hold another version's filters).
        rpmlintrc=$WORK/$NAME.rpmlintrc
        cp "$ROOT/packaging/rpm/$NAME.rpmlintrc" "$rpmlintrc"
        series=$("$RPMLINT" --version 2>/dev/null | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p' | head -n 1)
        if [ -f "$ROOT/packaging/rpm/rpmlint-$series.rpmlintrc" ]; then
            cat "$ROOT/packaging/rpm/rpmlint-$series.rpmlintrc" >> "$rpmlintrc"
        fi
        "$RPMLINT" -c "$ROOT/packaging/rpm/rpmlint.toml" -r "$rpmlintrc" "$TOP/SPECS/$NAME.spec" "$rpm" "$srpm"
    fi
fi
