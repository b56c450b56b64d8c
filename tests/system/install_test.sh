#!/usr/bin/env bash
# What `meson install` puts where a Debian system expects it, and whether the
# systemd unit holds up: `systemd-analyze verify` on the unit as installed
# (it fails when ExecStart= does not exist), the security exposure of the
# unit (must be 1.3 or lower: 1.2 + 0.1 for AF_NETLINK), and the man pages rendering without warnings.
# With prefix /usr the unit, sysusers and tmpfiles files go where systemd.pc
# says (Debian 12: /lib/systemd/system, /usr/lib/sysusers.d,
# /usr/lib/tmpfiles.d); with any other prefix (the default /usr/local) under
# PREFIX/lib. The configuration lives under sysconfdir: /etc/s5broker with
# prefix /usr, PREFIX/etc/s5broker otherwise.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
dest=$(mktemp -d /tmp/s5install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
fail() { echo "install_test: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null

option() {
  meson introspect "$build" --buildoptions |
    /usr/bin/python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]==sys.argv[1]))' "$1"
}
prefix=$(option prefix)
sysconfdir=$(option sysconfdir)
root=$dest$prefix
if [[ $prefix == /usr ]] && pkg-config --exists systemd; then
  unitdir=$(pkg-config --variable=systemdsystemunitdir systemd)
  sysusersdir=$(pkg-config --variable=sysusersdir systemd)
  tmpfilesdir=$(pkg-config --variable=tmpfilesdir systemd)
else
  unitdir=$prefix/lib/systemd/system
  sysusersdir=$prefix/lib/sysusers.d
  tmpfilesdir=$prefix/lib/tmpfiles.d
fi
[[ $sysconfdir == /* ]] || sysconfdir=$prefix/$sysconfdir
configdir=$sysconfdir/s5broker
# Paths below the prefix, and absolute ones (below $dest).
expected=(
  libexec/s5brokerd bin/s5brokerctl bin/s5socksify
  include/s5broker/socks5.h
  "$unitdir/s5brokerd.service" "$sysusersdir/s5broker.conf" "$tmpfilesdir/s5broker.conf"
  share/dbus-1/system.d/org.s5broker.Broker1.conf
  share/dbus-1/system-services/org.s5broker.Broker1.service
  share/dbus-1/interfaces/org.s5broker.Broker1.xml
  share/doc/s5broker/examples/s5brokerd.json
  share/bash-completion/completions/s5brokerctl
  share/man/man3/socks5udp_associate.3 share/man/man3/socks5udp_sendto.3
  share/man/man3/socks5udp_recvfrom.3 share/man/man3/socks5udp_current.3 share/man/man3/socks5udp_bind.3
  share/man/man3/socks5_getserv.3 share/man/man3/socks5_strerror.3 share/man/man3/socks5_errno.3
  share/man/man3/socks5udp_sendmmsg.3 share/man/man3/socks5udp_recvmmsg.3
  share/man/man8/s5brokerd.8 share/man/man5/s5brokerd.json.5 share/man/man1/s5brokerctl.1
  share/man/man1/s5socksify.1
)
for f in "${expected[@]}"; do
  if [[ $f == /* ]]; then
    [[ -e $dest$f ]] || fail "missing after install: $f"
  else
    [[ -e $root/$f ]] || fail "missing after install: $prefix/$f"
  fi
done
lib=$(find "$root" -name 'libs5client.so.1' | head -n1)
[[ -n $lib ]] || fail "libs5client.so.1 not installed"
[[ -n $(find "$root" -name s5client.pc) ]] || fail "s5client.pc not installed"
echo "installed:"
(cd "$dest" && find . -type f -o -type l | sort | sed 's|^\.|  |')

# Only the C API is exported.
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBW]$/ {print $3}' | sed 's/@.*//' | grep -v '^_' | sort | tr '\n' ' ')
want="socks5_errno_location socks5_getserv socks5_strerror socks5udp_associate socks5udp_bind socks5udp_current socks5udp_recvfrom socks5udp_recvmmsg socks5udp_sendmmsg socks5udp_sendto "
[[ $exported == "$want" ]] || fail "exported symbols: '$exported', want '$want'"

# The unit, the sysusers and tmpfiles files as configured: the programs and
# the configuration file of this prefix, the user and both groups, the
# configuration directory root:s5broker 0750.
unit=$dest$unitdir/s5brokerd.service
grep -qxF "ExecStart=$prefix/libexec/s5brokerd --config $configdir/s5brokerd.json" "$unit" ||
  fail "unit: ExecStart is not $prefix/libexec/s5brokerd --config $configdir/s5brokerd.json"
grep -qxF "ExecReload=$prefix/bin/s5brokerctl reload" "$unit" || fail "unit: ExecReload is not $prefix/bin/s5brokerctl reload"
grep -qxF "RestartPreventExitStatus=78" "$unit" || fail "unit: no RestartPreventExitStatus=78"
[[ $(grep -v '^#' "$dest$sysusersdir/s5broker.conf") == 'u s5broker - "s5broker SOCKS5 UDP broker" - -
g s5broker-clients -' ]] || fail "sysusers: not the user s5broker and the group s5broker-clients"
[[ $(grep -v '^#' "$dest$tmpfilesdir/s5broker.conf") == "d $configdir 0750 root s5broker -" ]] ||
  fail "tmpfiles: not 'd $configdir 0750 root s5broker -'"
grep -q '<policy group="s5broker-clients">' "$root/share/dbus-1/system.d/org.s5broker.Broker1.conf" ||
  fail "bus policy: no policy for group s5broker-clients"
grep -qxF 'SystemdService=s5brokerd.service' "$root/share/dbus-1/system-services/org.s5broker.Broker1.service" ||
  fail "activation file: SystemdService is not s5brokerd.service"
/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["allowed_groups"]==["s5broker-clients"]' \
  "$root/share/doc/s5broker/examples/s5brokerd.json" || fail "example configuration: not JSON, or not for s5broker-clients"
bash -n "$root/share/bash-completion/completions/s5brokerctl" || fail "bash completion: syntax error"

# verify resolves dependencies inside --root: give it the targets.
mkdir -p "$dest/usr/lib/systemd/system"
cp -a /lib/systemd/system/*.target /lib/systemd/system/*.slice "$dest/usr/lib/systemd/system/" 2>/dev/null || true
systemd-analyze verify --root="$dest" --man=no "$unit" || fail "systemd-analyze verify failed"
systemd-analyze security --offline=yes --root="$dest" --threshold=13 "$unit" | tail -n1
systemd-analyze security --offline=yes --root="$dest" --threshold=13 "$unit" >/dev/null ||
  fail "security exposure above 1.3"

# Man pages: no groff warnings, and the aliases point at the main page.
out=$(
  for f in libclient/man/socks5udp_associate.3 daemon/man/s5brokerd.8 daemon/man/s5brokerd.json.5 daemon/man/s5brokerctl.1 \
    libclient/socksify/s5socksify.1; do
    groff -ww -z -man "$src/$f" 2>&1
    MANWIDTH=80 man -l "$src/$f" 2>&1 >/dev/null
  done
  for n in socks5udp_sendto socks5udp_recvfrom socks5udp_current socks5_getserv socks5_strerror socks5_errno \
    socks5udp_sendmmsg socks5udp_recvmmsg; do
    [[ $(cat "$src/libclient/man/$n.3") == ".so man3/socks5udp_associate.3" ]] || echo "$n.3: not an alias"
  done
)
[[ -z $out ]] || fail "man pages: $out"
echo "install_test: ok"
