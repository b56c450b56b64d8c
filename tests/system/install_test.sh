#!/usr/bin/env bash
# What `meson install` puts where a Debian system expects it, and whether the
# systemd unit holds up: `systemd-analyze verify` on the unit as installed
# (it fails when ExecStart= does not exist), the security exposure of the
# unit (must be 1.2 or lower), and the man pages rendering without warnings.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
dest=$(mktemp -d /tmp/s5install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
fail() { echo "install_test: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null

prefix=$(meson introspect "$build" --buildoptions |
  /usr/bin/python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
root=$dest$prefix
expected=(
  libexec/s5brokerd bin/s5brokerctl
  include/s5broker/socks5.h
  lib/systemd/system/s5brokerd.service lib/sysusers.d/s5broker.conf
  share/dbus-1/system.d/org.s5broker.Broker1.conf
  share/dbus-1/system-services/org.s5broker.Broker1.service
  share/dbus-1/interfaces/org.s5broker.Broker1.xml
  share/man/man3/socks5udp_associate.3 share/man/man3/socks5udp_sendto.3
  share/man/man3/socks5udp_recvfrom.3 share/man/man3/socks5udp_current.3
  share/man/man3/socks5_getserv.3 share/man/man3/socks5_strerror.3 share/man/man3/socks5_errno.3
  share/man/man8/s5brokerd.8 share/man/man5/s5brokerd.json.5 share/man/man1/s5brokerctl.1
)
for f in "${expected[@]}"; do
  [[ -e $root/$f ]] || fail "missing after install: $prefix/$f"
done
lib=$(find "$root" -name 'libs5client.so.1' | head -n1)
[[ -n $lib ]] || fail "libs5client.so.1 not installed"
[[ -n $(find "$root" -name s5client.pc) ]] || fail "s5client.pc not installed"
echo "installed:"
(cd "$dest" && find . -type f -o -type l | sort | sed 's|^\.|  |')

# Only the C API is exported.
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBW]$/ {print $3}' | sed 's/@.*//' | grep -v '^_' | sort | tr '\n' ' ')
want="socks5_errno_location socks5_getserv socks5_strerror socks5udp_associate socks5udp_current socks5udp_recvfrom socks5udp_sendto "
[[ $exported == "$want" ]] || fail "exported symbols: '$exported', want '$want'"

unit=$root/lib/systemd/system/s5brokerd.service
# verify resolves dependencies inside --root: give it the targets and kill.
mkdir -p "$dest/usr/lib/systemd/system" "$dest/bin"
cp -a /lib/systemd/system/*.target /lib/systemd/system/*.slice "$dest/usr/lib/systemd/system/" 2>/dev/null || true
cp /bin/kill "$dest/bin/"
systemd-analyze verify --root="$dest" --man=no "$unit" || fail "systemd-analyze verify failed"
systemd-analyze security --offline=yes --root="$dest" --threshold=12 "$unit" | tail -n1
systemd-analyze security --offline=yes --root="$dest" --threshold=12 "$unit" >/dev/null ||
  fail "security exposure above 1.2"

# Man pages: no groff warnings, and the aliases point at the main page.
out=$(
  for f in libclient/man/socks5udp_associate.3 daemon/man/s5brokerd.8 daemon/man/s5brokerd.json.5 daemon/man/s5brokerctl.1; do
    groff -ww -z -man "$src/$f" 2>&1
    MANWIDTH=80 man -l "$src/$f" 2>&1 >/dev/null
  done
  for n in socks5udp_sendto socks5udp_recvfrom socks5udp_current socks5_getserv socks5_strerror socks5_errno; do
    [[ $(cat "$src/libclient/man/$n.3") == ".so man3/socks5udp_associate.3" ]] || echo "$n.3: not an alias"
  done
)
[[ -z $out ]] || fail "man pages: $out"
echo "install_test: ok"
