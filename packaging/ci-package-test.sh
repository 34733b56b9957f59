#!/usr/bin/env bash
# Builds both packages, installs the .deb on this machine, checks the installed
# configuration and unit, then removes and purges it again. Run by CI (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: it installs and removes the package"; exit 1; }

packaging/build-packages.sh
deb=$(ls target/packages/certkeeper_*.deb)
rpmfile=$(ls target/packages/certkeeper-*.rpm)

echo "== rpm contents"
rpm -qpl "$rpmfile"
test "$(rpm -qp --configfiles "$rpmfile")" = /etc/certkeeper/config.yaml
rpm -qp --scripts "$rpmfile" | grep -q daemon-reload
rpm -qpl "$rpmfile" | grep -qx /usr/share/doc/certkeeper/certkeeper-alerts.yml

echo "== install $deb"
dpkg -i "$deb"
/usr/bin/certkeeper check
test "$(stat -c %a /var/lib/certkeeper)" = 700
test -f /usr/share/man/man1/certkeeper.1.gz
test -f /usr/share/bash-completion/completions/certkeeper
test -f /usr/share/doc/certkeeper/certkeeper-alerts.yml
unit=/lib/systemd/system/certkeeper.service
test -f "$unit"
systemd-analyze verify "$unit"
systemd-analyze security --offline=true "$unit" | tail -n 1

echo "== remove keeps configuration and state; purge removes configuration"
dpkg -r certkeeper
test -f /etc/certkeeper/config.yaml
test ! -e /usr/bin/certkeeper
dpkg -P certkeeper
test ! -e /etc/certkeeper/config.yaml
test -d /var/lib/certkeeper
echo "package test: ok"
