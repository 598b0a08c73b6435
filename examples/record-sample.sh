#!/usr/bin/env bash
# Record examples/sample-http.pcap: real HTTP traffic between two Linux TCP
# stacks, each in a network namespace of its own, joined by a veth pair.
#
#   server namespace  10.77.0.1/24  fd00:77::1/64  veth0   HTTP server on port 8000
#   client namespace  10.77.0.2/24  fd00:77::2/64  veth1   curl
#
# tcpdump listens on veth0 inside the server namespace. Checksum and
# segmentation offloads are switched off on both ends first, so the capture
# holds wire-sized frames with correct checksums, as a capture taken on a real
# link would (with offloads on, a veth capture shows 64 KB "segments" whose
# checksums were never filled in).
#
# Needs root, iproute2, ethtool, tcpdump, curl and python3. Usage:
#   sudo examples/record-sample.sh [OUTPUT.pcap]
# Both namespaces are deleted on exit, whatever happens.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/sample-http.pcap}"

if [[ $(id -u) -ne 0 ]]; then
    echo "record-sample.sh: needs root (network namespaces, tcpdump)" >&2
    exit 1
fi
for tool in ip ethtool tcpdump curl python3; do
    command -v "$tool" >/dev/null || { echo "record-sample.sh: $tool not found" >&2; exit 1; }
done

srv="tw-srv-$$"
cli="tw-cli-$$"
work="$(mktemp -d)"
tcpdump_pid=""
server_pid=""

cleanup() {
    [[ -n $tcpdump_pid ]] && kill "$tcpdump_pid" 2>/dev/null || true
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

in_srv() { ip netns exec "$srv" "$@"; }
in_cli() { ip netns exec "$cli" "$@"; }

# --- the two stacks -------------------------------------------------------
ip netns add "$srv"
ip netns add "$cli"
# Created directly inside the namespaces: no interface ever appears on the host.
ip link add veth0 netns "$srv" type veth peer name veth1 netns "$cli"
in_srv ip addr add 10.77.0.1/24 dev veth0
in_cli ip addr add 10.77.0.2/24 dev veth1
in_srv ip -6 addr add fd00:77::1/64 dev veth0 nodad
in_cli ip -6 addr add fd00:77::2/64 dev veth1 nodad
in_srv ethtool -K veth0 tx off tso off gso off gro off >/dev/null
in_cli ethtool -K veth1 tx off tso off gso off gro off >/dev/null
# No link-local addresses: they would bring router solicitations and MLD
# reports at random times; the fixed ones above are enough for neighbour discovery.
in_srv ip link set veth0 addrgenmode none
in_cli ip link set veth1 addrgenmode none
for ns in "$srv" "$cli"; do ip netns exec "$ns" ip link set lo up; done
in_srv ip link set veth0 up
in_cli ip link set veth1 up

# --- what the server serves, and what the client uploads -------------------
mkdir -p "$work/www"
echo "hello from the server namespace" >"$work/www/hello.txt"
# 28,800 bytes of numbered lines: a response that spans many segments.
python3 -c '
import sys
for i in range(1, 601):
    sys.stdout.write(f"line {i:4d} of notes.txt, served over a veth pair\n")
' >"$work/www/notes.txt"
# 6,800-byte upload body.
python3 -c '
import sys
for i in range(1, 201):
    sys.stdout.write(f"upload line {i:3d}: client to server\n")
' >"$work/upload.txt"

# http.server's handler, speaking HTTP/1.1 (so one connection carries several
# requests) on a dual-stack socket, plus PUT so the client can upload.
cat >"$work/server.py" <<'PY'
import hashlib
import socket
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        reply = f"stored {len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()}\n".encode()
        self.send_response(201)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


root = sys.argv[1]
DualStackServer(("::", 8000), partial(Handler, directory=root)).serve_forever()
PY

# Started with `ip netns exec` itself (not a shell function) so that $! is
# the server's own pid: ip netns exec execs its command.
ip netns exec "$srv" python3 "$work/server.py" "$work/www" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 50); do
    in_srv ss -Hltn 'sport = :8000' | grep -q . && break
    sleep 0.1
done

# --- capture --------------------------------------------------------------
ip netns exec "$srv" tcpdump -i veth0 --immediate-mode -U -w "$work/capture.pcap" 2>"$work/tcpdump.log" &
tcpdump_pid=$!
for _ in $(seq 50); do
    grep -q "listening on" "$work/tcpdump.log" && break
    sleep 0.1
done

curl_() { in_cli curl --silent --show-error --noproxy '*' "$@"; }
# 1. one keep-alive connection, two GETs: the directory listing, then notes.txt
curl_ -o /dev/null -o /dev/null http://10.77.0.1:8000/ http://10.77.0.1:8000/notes.txt
# 2. an upload (PUT) of upload.txt on a connection of its own
curl_ -o /dev/null -H 'Expect:' -T "$work/upload.txt" http://10.77.0.1:8000/upload.txt
# 3. a small GET over IPv6
curl_ -o /dev/null 'http://[fd00:77::1]:8000/hello.txt'
# 4. a connection attempt to a closed port: SYN answered by RST
curl_ -o /dev/null http://10.77.0.1:8001/ 2>/dev/null || true
sleep 1 # let the last FIN/ACK exchanges reach the wire and tcpdump

kill -INT "$tcpdump_pid"
wait "$tcpdump_pid" || true
tcpdump_pid=""
cat "$work/tcpdump.log" >&2

cp "$work/capture.pcap" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"
