#!/usr/bin/env bash
# Installs what the test suite needs (openssl, nginx, apache2, curl, GnuTLS certtool,
# NSS pk12util and certutil, Pebble, BIND 9 and dig; via apt, only when missing) and
# runs the whole suite:
# formatting, lints, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -x /usr/sbin/apache2 ] || need+=(apache2)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v certtool >/dev/null 2>&1 || need+=(gnutls-bin)
command -v pk12util >/dev/null 2>&1 || need+=(libnss3-tools)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[ -x /usr/bin/pebble ] || need+=(pebble)
[ -x /usr/sbin/named ] || need+=(bind9)
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "installing: ${need[*]}"
    # Keep the packages' own services from starting: tests run private instances.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ -z "$policy" ] || $sudo rm -f "$policy"
fi

# promtool, for the metrics and alert-rule tests: Debian's prometheus package unpacked
# under target/tools (not installed: no service to keep from starting).
if ! command -v promtool >/dev/null 2>&1 && [ ! -x target/tools/usr/bin/promtool ]; then
    mkdir -p target/tools
    (
        cd target/tools
        apt-get download prometheus >/dev/null 2>&1 || {
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo=sudo
            $sudo apt-get update -qq
            apt-get download prometheus >/dev/null
        }
        dpkg-deb -x prometheus_*.deb .
        rm -f prometheus_*.deb
    )
fi

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
