#!/usr/bin/env bash
# Builds sngate's Debian package with cargo-deb (metadata in Cargo.toml,
# [package.metadata.deb]):
#   native   for this machine's architecture (the default)
#   aarch64  arm64, for 64-bit Raspberry Pi OS / Debian
#   armv7    armhf, for 32-bit Raspberry Pi OS / Debian
#   all      the three
# Installs cargo-deb (`cargo install cargo-deb --locked`) and, for the Pi
# targets, the cross toolchain (scripts/cross-env.sh) when missing; prints
# each package's path, its control fields and its files.
#
# Install on the Pi with `sudo apt install ./sngate_<version>_arm64.deb`.
# Docs: docs/raspberry-pi.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cross-env.sh
source scripts/cross-env.sh

which="${1:-native}"
case "$which" in
  all) names=(native aarch64 armv7) ;;
  native | aarch64 | armv7) names=("$which") ;;
  -h | --help)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [native|aarch64|armv7|all]" >&2
    exit 2
    ;;
esac

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "==> cargo install cargo-deb --locked"
  cargo install cargo-deb --locked
fi
# dpkg-shlibdeps (dpkg-dev) computes the package's Depends.
apt_install dpkg-dev

for name in "${names[@]}"; do
  (
    # cargo deb prints the package's path last on stdout.
    if [ "$name" = native ]; then
      echo "==> cargo deb"
      deb="$(cargo deb --locked --output target/debian | tail -n 1)"
    else
      cross_setup "$name"
      echo "==> cargo deb --target $TRIPLE"
      deb="$(cargo deb --locked --target "$TRIPLE" --output "target/$TRIPLE/debian" | tail -n 1)"
    fi
    echo "==> $deb ($(stat -c %s "$deb") bytes)"
    dpkg-deb --info "$deb"
    dpkg-deb --contents "$deb"

    # Unpacked into a temporary directory (nothing is installed): the files
    # are where the unit and the docs say, for the right machine.
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    dpkg-deb --extract "$deb" "$root"
    dpkg-deb --control "$deb" "$root/DEBIAN"
    for file in usr/bin/sngate etc/sngate/sngate.toml usr/lib/systemd/system/sngate.service; do
      [ -f "$root/$file" ] || { echo "$deb lacks /$file" >&2; exit 1; }
    done
    grep -qx /etc/sngate/sngate.toml "$root/DEBIAN/conffiles" || {
      echo "/etc/sngate/sngate.toml is not a conffile" >&2
      exit 1
    }
    machine="$(od -An -tx1 -j18 -N2 "$root/usr/bin/sngate" | tr -d ' ')"
    case "$name:$machine" in
      aarch64:b700 | armv7:2800 | native:*) ;;
      *)
        echo "usr/bin/sngate is built for ELF machine $machine, not $name" >&2
        exit 1
        ;;
    esac
    if [ "$name" = native ]; then
      "$root/usr/bin/sngate" check-config "$root/etc/sngate/sngate.toml"
    fi
    echo "==> $deb: files, conffile and architecture checked"
  )
done
