# shellcheck shell=bash
# Cross-compilation for the Raspberry Pi, shared by cross-build.sh,
# build-deb.sh and pi-smoke.sh (sourced, not run).
#
# `cross_setup NAME` (NAME: aarch64 | armv7) installs what is missing and
# exports what cargo needs to build for that target:
#   - Debian's cross C toolchain and target libc (gcc-<prefix>,
#     libc6-dev-<arch>-cross): the linker, and the C compiler for ring;
#   - CARGO_TARGET_<TRIPLE>_LINKER, CC_<triple>, AR_<triple> — environment
#     variables only, so native builds are never changed (no .cargo/config);
#   - a Rust standard library for the target:
#       1. rustup's (`rustup target add`), when rustup can download it;
#       2. otherwise Debian's rustc-web with its libstd-rust-web-dev for the
#          target architecture, unpacked under target/debian-rust/ (nothing
#          is installed into /usr; the host's rustc is left alone) and used
#          through RUSTC. This is the path for machines that reach Debian's
#          archive but not rustup's download server.
#     SNGATE_CROSS_RUST=rustup|debian forces one (default: auto).
# It sets TRIPLE, GCC_PREFIX and DEB_ARCH for the caller.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_apt_updated=""
# Installs the Debian packages given that are not installed yet.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "==> installing ${missing[*]}" >&2
  if [ -z "$_apt_updated" ]; then
    as_root apt-get update -qq
    _apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Sets TRIPLE, GCC_PREFIX and DEB_ARCH for a target name.
cross_names() {
  case "$1" in
    aarch64) TRIPLE=aarch64-unknown-linux-gnu GCC_PREFIX=aarch64-linux-gnu DEB_ARCH=arm64 ;;
    armv7) TRIPLE=armv7-unknown-linux-gnueabihf GCC_PREFIX=arm-linux-gnueabihf DEB_ARCH=armhf ;;
    *)
      echo "unknown target '$1' (aarch64 or armv7)" >&2
      return 2
      ;;
  esac
}

# The crate's minimum Rust version (rust-version in Cargo.toml), e.g. 1.85.
_msrv() {
  sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$REPO_ROOT/Cargo.toml" | head -n 1
}

# Prepares Debian's rustc-web with the standard library for $TRIPLE under
# target/debian-rust/<version>/ and exports RUSTC. Picks the newest version
# that the archive has both for the host and for $DEB_ARCH (a mirror in the
# middle of a sync can lag behind for one architecture), not older than
# rust-version.
_debian_rust() {
  local root="$REPO_ROOT/target/debian-rust"
  local host_arch
  host_arch="$(dpkg --print-architecture)"
  # Foreign architectures for this apt run only: the machine's dpkg
  # configuration is not changed.
  local apt_arch=(-o "APT::Architectures::=$host_arch" -o "APT::Architectures::=$DEB_ARCH")

  local dir
  for dir in "$root"/*/; do
    if [ -d "$dir/usr/lib/rustlib/$TRIPLE/lib" ] && [ -x "$dir/rustc" ]; then
      export RUSTC="$dir/rustc"
      echo "==> Rust for $TRIPLE: Debian's rustc-web in ${dir#"$REPO_ROOT"/}" >&2
      return 0
    fi
  done

  echo "==> looking for Debian's rustc-web and its $DEB_ARCH standard library" >&2
  # One index may fail while the mirror syncs; we pick from what is there.
  as_root apt-get update -qq "${apt_arch[@]}" >&2 || true
  local host_versions target_versions ver="" msrv
  host_versions="$(apt-cache "${apt_arch[@]}" madison rustc-web | awk -F'|' '{gsub(/ /, "", $2); print $2}')"
  target_versions="$(apt-cache "${apt_arch[@]}" madison "libstd-rust-web-dev:$DEB_ARCH" | awk -F'|' '{gsub(/ /, "", $2); print $2}')"
  msrv="$(_msrv)"
  local v upstream
  for v in $(printf '%s\n' "$host_versions" | sort -rV); do
    upstream="${v%%+*}"
    upstream="${upstream%%-*}"
    printf '%s\n' "$target_versions" | grep -qxF "$v" || continue
    # Not older than rust-version.
    [ "$(printf '%s\n%s\n' "$msrv" "$upstream" | sort -V | head -n 1)" = "$msrv" ] || continue
    ver="$v"
    break
  done
  if [ -z "$ver" ]; then
    echo "no Debian rustc-web >= $msrv with a $DEB_ARCH standard library in the archive" >&2
    return 1
  fi
  upstream="${ver%%+*}"
  upstream="${upstream%%-*}"
  local mm="${upstream%.*}"
  local prefix="$root/$upstream"
  # rustc-web links against LLVM: a plain shared library, installed from
  # Debian with its own dependencies.
  local llvm
  llvm="$(apt-cache show "libstd-rust-web-$mm=$ver" | sed -n 's/^Depends: //p' | grep -o 'libllvm[0-9]*' | head -n 1)"
  [ -n "$llvm" ] && apt_install "$llvm"

  echo "==> unpacking rustc-web $ver for $TRIPLE into ${prefix#"$REPO_ROOT"/}" >&2
  local debs="$root/debs/$ver-$DEB_ARCH"
  rm -rf "$debs"
  mkdir -p "$debs" "$prefix"
  (
    cd "$debs" || exit 1
    apt-get download -q "${apt_arch[@]}" \
      "rustc-web=$ver" "libstd-rust-web-$mm=$ver" "libstd-rust-web-dev=$ver" \
      "libstd-rust-web-dev:$DEB_ARCH=$ver" 2>&1 | grep -v "unsandboxed" >&2
  )
  local deb
  for deb in "$debs"/*.deb; do
    dpkg-deb -x "$deb" "$prefix"
  done
  rm -rf "$debs"
  local multiarch
  multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")"
  local libdir="$prefix/usr/lib/$multiarch"
  cat >"$prefix/rustc" <<EOF
#!/bin/sh
# Debian's rustc-web $ver, unpacked here by scripts/cross-env.sh.
LD_LIBRARY_PATH="$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$prefix/usr/bin/rustc" "\$@"
EOF
  chmod +x "$prefix/rustc"
  if [ ! -d "$("$prefix/rustc" --print target-libdir --target "$TRIPLE")" ]; then
    echo "the unpacked rustc-web has no standard library for $TRIPLE" >&2
    return 1
  fi
  export RUSTC="$prefix/rustc"
  echo "==> Rust for $TRIPLE: $("$RUSTC" --version) (Debian)" >&2
}

# Makes a Rust standard library for $TRIPLE available (see the top).
_rust_target() {
  local mode="${SNGATE_CROSS_RUST:-auto}"
  case "$mode" in auto | rustup | debian) ;; *)
    echo "SNGATE_CROSS_RUST must be auto, rustup or debian" >&2
    return 2
    ;;
  esac
  if [ "$mode" != debian ] && command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qxF "$TRIPLE"; then
    echo "==> Rust for $TRIPLE: rustup's target" >&2
    return 0
  fi
  if [ "$mode" = auto ] && compgen -G "$REPO_ROOT/target/debian-rust/*/usr/lib/rustlib/$TRIPLE/lib" >/dev/null; then
    _debian_rust
    return
  fi
  if [ "$mode" != debian ] && command -v rustup >/dev/null 2>&1; then
    echo "==> rustup target add $TRIPLE" >&2
    # rustup waits a long time on a network it cannot reach.
    if timeout "${SNGATE_RUSTUP_TIMEOUT:-120}" rustup target add "$TRIPLE" >&2; then
      return 0
    fi
    echo "==> rustup could not download the $TRIPLE standard library" >&2
  fi
  [ "$mode" = rustup ] && return 1
  _debian_rust
}

# Installs and exports everything needed to build for target NAME.
cross_setup() {
  cross_names "$1" || return
  apt_install "gcc-$GCC_PREFIX" "libc6-dev-$DEB_ARCH-cross" "binutils-$GCC_PREFIX"
  local upper lower
  upper="$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')"
  lower="${TRIPLE//-/_}"
  export "CARGO_TARGET_${upper}_LINKER=$GCC_PREFIX-gcc"
  export "CC_${lower}=$GCC_PREFIX-gcc"
  export "AR_${lower}=$GCC_PREFIX-ar"
  _rust_target
}
