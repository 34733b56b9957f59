#!/usr/bin/env bash
# Builds both packages and checks them: lintian --pedantic and rpmlint find nothing;
# then each is installed on this machine, its configuration checked, its unit verified,
# its manual pages rendered, and it is removed and purged again. Run by CI (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: it installs and removes the packages"; exit 1; }

need=()
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v rpmlint >/dev/null 2>&1 || need+=(rpmlint)
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v col >/dev/null 2>&1 || need+=(bsdextrautils)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

packaging/build-packages.sh
deb=$(ls target/packages/certkeeper_*.deb)
rpmfile=$(ls target/packages/certkeeper-*.rpm)

echo "== lintian --pedantic $deb"
# Every error, warning and pedantic finding fails (informational tags are shown only).
status=0
findings=$(lintian --pedantic --fail-on error,warning,pedantic --tag-display-limit 0 "$deb" 2>&1) || status=$?
grep -v '^running with root privileges' <<<"$findings" || true
[ "$status" -eq 0 ]

echo "== rpmlint $rpmfile"
findings=$(rpmlint -c packaging/rpmlint.toml "$rpmfile" 2>&1) || true
grep -E ': (E|W): |packages and' <<<"$findings"
grep -q ' 0 errors, 0 warnings' <<<"$findings"

echo "== rpm contents"
test "$(rpm -qp --configfiles "$rpmfile")" = /etc/certkeeper/config.yaml
rpm -qp --scripts "$rpmfile" | grep daemon-reload >/dev/null
rpm -qpl "$rpmfile" | grep -x /usr/share/doc/certkeeper/certkeeper-alerts.yml >/dev/null
rpm -qpl "$rpmfile" | grep -x /usr/share/man/man5/certkeeper.yaml.5.gz >/dev/null

# What both packages must leave on the machine.
check_installed() {
    /usr/bin/certkeeper check
    test "$(stat -c %a /var/lib/certkeeper)" = 700
    # The same configuration mode from both packages: it holds no secret (those are in
    # the files it names), and every user may read it.
    test "$(stat -c %a /etc/certkeeper/config.yaml)" = 644
    for page in certkeeper certkeeper-run certkeeper-renew certkeeper-ca-rotate; do
        man -w "$page" >/dev/null
    done
    # Rendered text, without the terminal's overstrike.
    man certkeeper-run | col -b | grep SIGHUP >/dev/null
    man 5 certkeeper.yaml | col -b | grep -F 'certificates[].files.layout' >/dev/null
    test -f /usr/share/bash-completion/completions/certkeeper
    test -f /usr/share/doc/certkeeper/certkeeper-alerts.yml
    test -f /usr/share/doc/certkeeper/certkeeper-alerts.test.yml
    local unit=$1
    test -f "$unit"
    systemd-analyze verify "$unit"
}

echo "== install $deb"
dpkg -i "$deb"
check_installed /lib/systemd/system/certkeeper.service
systemd-analyze security --offline=true /lib/systemd/system/certkeeper.service | tail -n 1

echo "== remove keeps configuration and state; purge removes configuration"
dpkg -r certkeeper
test -f /etc/certkeeper/config.yaml
test ! -e /usr/bin/certkeeper
dpkg -P certkeeper
test ! -e /etc/certkeeper/config.yaml
test -d /var/lib/certkeeper

echo "== install $rpmfile"
# rpm's own database on this Debian machine knows no systemd package: --nodeps.
rpm -i --nodeps "$rpmfile"
check_installed /usr/lib/systemd/system/certkeeper.service
echo "== erase"
rpm -e certkeeper
test ! -e /usr/bin/certkeeper
test ! -e /etc/certkeeper/config.yaml
test ! -e /usr/share/man/man1/certkeeper-run.1.gz
echo "package test: ok"
