#!/usr/bin/env bash
# The system tools the test suite needs, installed from Debian's packages when missing (README: "Run the tests").
#
#   ssh, scp, ssh-keygen   bench --ssh against the tests' boards (openssh-client)
#   unshare                the tests' sshd servers run in a mount namespace of their own (util-linux)
#   apt-get, dpkg-deb      tests/board fetches and unpacks qemu-user, sshd and an arm64 root (apt, dpkg)
#   java, javac (>= 17)    android_demo/compile_check.sh (openjdk-17-jdk-headless)
#   npm, unzip             compile_check.sh fetches kotlinc and the Android AARs (npm, unzip)
#
# Everything else a test needs is fetched by the project's own scripts into ${EDGETUNE_CACHE:-~/.cache/edgetune}:
# qemu-user and OpenSSH's sshd (tests/board/arm64_board.py), Kotlin and the Android libraries (compile_check.sh).
# Prints one line per missing tool and what it installs; nothing when all are there. As a user other than root,
# it prints the apt-get command to run instead and exits 1.
set -euo pipefail

missing=()
need() {  # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "system-tools: $1 is missing: installing Debian's $2"
    missing+=("$2")
}

need ssh openssh-client
need scp openssh-client
need ssh-keygen openssh-client
need unshare util-linux
need dpkg-deb dpkg
need apt-get apt
need npm npm
need unzip unzip
need javac openjdk-17-jdk-headless
if command -v java >/dev/null 2>&1; then
    major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [[ ${major%%.*} -lt 17 ]]; then
        echo "system-tools: java $major is older than 17: installing Debian's openjdk-17-jdk-headless"
        missing+=(openjdk-17-jdk-headless)
    fi
else
    need java openjdk-17-jdk-headless
fi

[[ ${#missing[@]} -eq 0 ]] && exit 0
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
    echo "system-tools: run as root: apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${packages[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "system-tools: apt-get install ${packages[*]} failed" >&2
    exit 1
fi
rm -f "$log"
echo "system-tools: installed ${packages[*]}"
