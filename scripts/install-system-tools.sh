#!/usr/bin/env bash
# Install the system tools the test suite compares against or drives:
#   tshark   differential oracle for the packet table
#   tcpdump  real captures and libpcap's read speed (bench)
#   tcpflow  differential oracle for stream extraction
#   ip       network namespaces for the real-Linux-stack tests (iproute2)
#   ethtool  turns segmentation offloads off on the test hosts' veth pairs
#   chromium the headless browser tests/test_report.py drives with Playwright (Debian's
#            package: Playwright never downloads a browser of its own here)
#
# Idempotent: does nothing when every tool is already there. As root it runs
# `apt-get update` once and installs the missing packages non-interactively.
# Without root it only says what is missing and exits 0: the tests that need
# a missing tool skip themselves.
set -euo pipefail

# tool -> Debian package
declare -A package_of=(
    [tshark]=tshark
    [tcpdump]=tcpdump
    [tcpflow]=tcpflow
    [ip]=iproute2
    [ethtool]=ethtool
    [chromium]=chromium
)

missing=()
for tool in tshark tcpdump tcpflow ip ethtool chromium; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-tools: tshark, tcpdump, tcpflow, ip, ethtool and chromium are present"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-system-tools: missing packages: ${missing[*]}" >&2
    echo "install-system-tools: not root, not installing; tests that need them will skip." >&2
    echo "install-system-tools: to install: sudo $0" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-tools: missing packages: ${missing[*]}; no apt-get here," \
        "install them with this system's package manager (tests that need them skip)." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# wireshark-common asks whether non-root users may capture; answer "no" up front
# so the install never waits for a terminal.
if command -v debconf-set-selections >/dev/null 2>&1; then
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        debconf-set-selections
fi

echo "install-system-tools: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

for tool in tshark tcpdump tcpflow ip ethtool chromium; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install-system-tools: $tool still missing after install" >&2
        exit 1
    }
done
echo "install-system-tools: done"
