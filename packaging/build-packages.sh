#!/usr/bin/env bash
# Builds target/packages/certkeeper_*.deb and target/packages/certkeeper-*.rpm from a
# clean checkout, and prints their paths. Installs what it needs when missing:
# cargo-deb from crates.io, and rpmbuild (Debian package `rpm`) via apt. Quiet unless a
# step fails: then that step's output is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Runs a command with its output kept aside; shows it only when the command fails.
quiet() {
    local log status=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        echo "build-packages: failed ($status): $*" >&2
        cat "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
command -v cargo-deb >/dev/null 2>&1 || quiet cargo install --locked cargo-deb
if ! command -v rpmbuild >/dev/null 2>&1; then
    quiet $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive quiet $sudo apt-get install -y -qq --no-install-recommends rpm
fi

quiet cargo build --release --locked
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

# Man pages and completions come from the command-line definitions themselves (and
# certkeeper.yaml(5) from the configuration reference the README's table comes from).
assets=target/assets
rm -rf "$assets" target/packages && mkdir -p "$assets/man" target/packages
bin=target/release/certkeeper
quiet "$bin" manpage "$assets/man"
gzip -9n "$assets"/man/*
gzip -9n < packaging/debian/changelog > "$assets/changelog.gz"
"$bin" completions bash > "$assets/certkeeper.bash"
"$bin" completions zsh > "$assets/_certkeeper"
"$bin" completions fish > "$assets/certkeeper.fish"
# The shipped configuration must pass its own check.
quiet "$bin" check -c packaging/config.yaml

quiet cargo deb --no-build --locked --output target/packages/

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" systemd/certkeeper.service packaging/config.yaml README.md config/example.yaml \
   packaging/debian/copyright \
   packaging/prometheus/certkeeper-alerts.yml packaging/prometheus/certkeeper-alerts.test.yml \
   "$assets"/certkeeper.bash "$assets"/_certkeeper "$assets"/certkeeper.fish "$stage"/
cp -r "$assets/man" "$stage/man"
quiet rpmbuild -bb packaging/certkeeper.spec \
    --define "_topdir $stage/rpm" \
    --define "_rpmdir $PWD/target/packages" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "ck_version $version" \
    --define "ck_arch $(uname -m)" \
    --define "ck_stage $stage" \
    --define "__os_install_post %{nil}" \
    --define "_build_id_links none"
ls target/packages/*.deb target/packages/*.rpm
