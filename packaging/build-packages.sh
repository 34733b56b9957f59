#!/usr/bin/env bash
# Builds target/packages/certkeeper_*.deb and target/packages/certkeeper-*.rpm from a
# clean checkout. Installs what it needs when missing: cargo-deb from crates.io, and
# rpmbuild (Debian package `rpm`) via apt.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
if ! command -v rpmbuild >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends rpm >/dev/null
fi

cargo build --release --locked
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

# Man page and completions come from the command-line definitions themselves.
assets=target/assets
rm -rf "$assets" && mkdir -p "$assets" target/packages
bin=target/release/certkeeper
"$bin" manpage | gzip -9n > "$assets/certkeeper.1.gz"
"$bin" completions bash > "$assets/certkeeper.bash"
"$bin" completions zsh > "$assets/_certkeeper"
"$bin" completions fish > "$assets/certkeeper.fish"
# The shipped configuration must pass its own check.
"$bin" check -c packaging/config.yaml >/dev/null

cargo deb --no-build --locked --output target/packages/

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" systemd/certkeeper.service packaging/config.yaml README.md config/example.yaml \
   packaging/prometheus/certkeeper-alerts.yml packaging/prometheus/certkeeper-alerts.test.yml \
   "$assets"/certkeeper.1.gz "$assets"/certkeeper.bash "$assets"/_certkeeper "$assets"/certkeeper.fish "$stage"/
rpmbuild -bb packaging/certkeeper.spec \
    --define "_topdir $stage/rpm" \
    --define "_rpmdir $PWD/target/packages" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "ck_version $version" \
    --define "ck_arch $(uname -m)" \
    --define "ck_stage $stage" \
    --define "__os_install_post %{nil}" \
    --define "_build_id_links none" >/dev/null
ls -l target/packages/
