#!/usr/bin/env bash
# Builds the Debian package of envelopefs with dpkg-deb:
#   /usr/bin/envelopefs
#   /usr/sbin/mount.fuse.envelopefs -> envelopefs   (the mount(8) helper: -t fuse.envelopefs, fstab)
#   bash, zsh and fish completions, man pages (generated from the clap definitions)
#   /usr/lib/systemd/system/envelopefs@.service, examples (fstab line, .mount unit), README
# and declares its dependency on fuse3 (fusermount3).
#
# Usage: scripts/package.sh [OUTDIR]        (default: target/debian)
#   ENVELOPEFS_BIN=PATH  package this binary instead of building `cargo build --release`
# Prints the path of the .deb on stdout. Needs dpkg-deb (every Debian and Ubuntu has it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "package.sh: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (Debian/Ubuntu only)"

out="${1:-target/debian}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || die "no version in Cargo.toml"
arch="$(dpkg --print-architecture)"

bin="${ENVELOPEFS_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --locked >&2
    bin=target/release/envelopefs
fi
[ -x "$bin" ] || die "$bin is not an executable"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pkg="$work/envelopefs_${version}_${arch}"
doc="$pkg/usr/share/doc/envelopefs"

install -D -m 0755 "$bin" "$pkg/usr/bin/envelopefs"
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$pkg/usr/bin/envelopefs"
fi
install -d -m 0755 "$pkg/usr/sbin"
ln -s ../bin/envelopefs "$pkg/usr/sbin/mount.fuse.envelopefs"

# Completions and man pages, from the binary being packaged.
install -d -m 0755 "$pkg/usr/share/bash-completion/completions" \
    "$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d" \
    "$pkg/usr/share/man/man1"
"$bin" completions bash >"$pkg/usr/share/bash-completion/completions/envelopefs"
"$bin" completions zsh >"$pkg/usr/share/zsh/vendor-completions/_envelopefs"
"$bin" completions fish >"$pkg/usr/share/fish/vendor_completions.d/envelopefs.fish"
"$bin" man --dir "$pkg/usr/share/man/man1"
gzip -9n "$pkg"/usr/share/man/man1/*.1

install -D -m 0644 contrib/envelopefs@.service "$pkg/usr/lib/systemd/system/envelopefs@.service"
install -d -m 0755 "$doc/examples"
install -m 0644 contrib/envelopefs.conf.example contrib/mnt-vault.mount contrib/fstab.example "$doc/examples/"
install -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: envelopefs

Files: *
License: MIT or Apache-2.0
COPYRIGHT
find "$pkg" -type d -exec chmod 0755 {} +

# libc6 as the binary needs it (dpkg-shlibdeps, when dpkg-dev is installed), and fuse3.
libc="libc6"
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$work/src/debian"
    printf 'Source: envelopefs\n\nPackage: envelopefs\nArchitecture: any\n' >"$work/src/debian/control"
    shlibs="$(cd "$work/src" && dpkg-shlibdeps -O "$pkg/usr/bin/envelopefs" 2>/dev/null | sed -n 's/^shlibs:Depends=//p' || true)"
    [ -z "$shlibs" ] || libc="$shlibs"
fi

install -d -m 0755 "$pkg/DEBIAN"
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: envelopefs
Version: $version
Architecture: $arch
Maintainer: envelopefs developers <envelopefs@users.noreply.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Depends: $libc, fuse3
Section: utils
Priority: optional
Description: encrypted FUSE filesystem with per-file keys and header-only re-encryption
 envelopefs encrypts every file with its own data key, wrapped under versioned
 master keys. After a key rotation a whole bucket is re-encrypted in seconds,
 because only each file's small key header is rewrapped. Includes the mount(8)
 helper (mount -t fuse.envelopefs, /etc/fstab), a systemd unit template, shell
 completions and man pages.
CONTROL

mkdir -p "$out"
deb="$out/envelopefs_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >&2
echo "$deb"
