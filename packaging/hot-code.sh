#!/usr/bin/env bash
# Makes packaging/hot-code.txt, the functions the linker puts first (see build.rs): what
# a daemon runs while it issues, installs and reloads 100 certificates, starts again on
# them, and stops, as valgrind's callgrind sees it. Run it after a toolchain or
# Cargo.lock update, or a change of a dependency's features (the names in the list
# belong to one of each, and features are part of a crate's symbols); it needs valgrind
# and python3 and takes a few minutes (one release build of its own, in
# target/hot-code).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind python3; do
    command -v "$tool" >/dev/null || { echo "hot-code.sh needs $tool" >&2; exit 1; }
done

# The release build as shipped, but with its symbols: RUSTFLAGS does not change the
# names of its functions (the crates' metadata), so they are the shipped binary's.
target=target/hot-code
RUSTFLAGS="-C strip=none" cargo build --release --locked --quiet --target-dir "$target" --bin certkeeper
bin="$PWD/$target/release/certkeeper"

python3 - "$bin" packaging/hot-code.txt <<'EOF'
import os, socket, subprocess, sys, tempfile

binary, out = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp(prefix="certkeeper-hot-")
config = os.path.join(work, "config.yaml")
with open(config, "w") as f:
    f.write(f"state_dir: {work}/state\n")
    f.write("servers:\n  web:\n    type: command\n    test: [/bin/true]\n    reload: [/bin/true]\n")
    f.write("certificates:\n")
    for i in range(100):
        d = f"{work}/tls{i % 4}"
        f.write(f"  - name: c{i}\n    sans: [c{i}.example.internal]\n")
        f.write(f"    files: {{ layout: nginx, cert: {d}/c{i}.crt, key: {d}/c{i}.key }}\n")
        f.write("    reload: [web]\n")

def callgrind(name, args, daemon):
    """Runs certkeeper under callgrind (a daemon until READY=1, then SIGTERM)."""
    dump = os.path.join(work, f"callgrind.{name}")
    env = dict(os.environ, CERTKEEPER_LOG="warn")
    cmd = ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no",
           "--compress-pos=no", f"--callgrind-out-file={dump}", binary] + args
    if daemon:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(work, "notify"))
        sock.settimeout(600)
        env["NOTIFY_SOCKET"] = os.path.join(work, "notify")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if daemon:
        while b"READY=1" not in sock.recv(4096):
            pass
        p.terminate()
        sock.close()
        os.unlink(os.path.join(work, "notify"))
    p.wait()
    names = []
    with open(dump) as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                names.append(line.split("=", 1)[1].split(") ", 1)[-1].strip())
    return names

runs = [
    ("issue", ["run", "-c", config], True),
    ("start", ["run", "-c", config], True),
    ("renew", ["renew", "-c", config, "--force", "c0"], False),
    ("status", ["status", "-c", config], False),
]
text = set()
for line in subprocess.check_output(["nm", "--defined-only", binary], text=True, errors="replace").splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tT":
        text.add(parts[2])
order, seen = [], set()
for name, args, daemon in runs:
    for fn in callgrind(name, args, daemon):
        if fn in text and fn not in seen:
            seen.add(fn)
            order.append(fn)
with open(out, "w") as f:
    f.write("\n".join(order) + "\n")
print(f"{out}: {len(order)} functions")
subprocess.run(["rm", "-rf", work])
EOF
