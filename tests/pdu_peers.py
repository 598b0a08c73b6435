"""Real clients and servers whose messages the framing tests check (run as a script).

    python pdu_peers.py http|dns|modbus PORT TRUTH.json

Server and client run in this one process (the server in a thread) on
127.0.0.1:PORT; TRUTH.json records what the applications sent and received, as
the applications saw it. Nothing here imports tcpweave.
"""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _body(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


# ------------------------------------------------------------------------------ HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "20000")
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in (5, 3000, 1, 700):
                self.wfile.write(b"%x\r\n%s\r\n" % (n, _body(n, n)))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/nocontent":
            self.send_response(204)
            self.end_headers()
        elif self.path == "/cached":
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        elif self.path == "/close":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(_body(4000, 9))
        else:
            size = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(_body(size, 1))


HTTP_REQUESTS = [
    ("GET", "/size/10", None),
    ("GET", "/size/20000", None),
    ("HEAD", "/size/20000", None),
    ("GET", "/chunked", None),
    ("GET", "/nocontent", None),
    ("GET", "/cached", None),
    ("POST", "/echo", _body(3000, 5)),
    ("GET", "/size/0", None),
    ("GET", "/close", None),
]


def http(port: int) -> dict[str, Any]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    exchanges = []
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    for method, path, body in HTTP_REQUESTS:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        exchanges.append(
            {"method": method, "path": path, "request_body": (body or b"").hex(),
             "status": resp.status, "body": data.hex()}
        )  # fmt: skip
    conn.close()
    server.shutdown()
    return {"exchanges": exchanges}


# ------------------------------------------------------------------------------- DNS


def dns(port: int) -> dict[str, Any]:
    import dns.message
    import dns.query
    import dns.rrset
    import dns.version

    log: list[tuple[str, bytes]] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while True:
                head = self.request.recv(2, socket.MSG_WAITALL)
                if len(head) < 2:
                    return
                wire = self.request.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                log.append(("query", head + wire))
                query = dns.message.from_wire(wire)
                response = dns.message.make_response(query)
                name = query.question[0].name
                if name.labels[0] == b"big":  # a response larger than one segment
                    texts = [f'"{"t" * 200}{i}"' for i in range(30)]
                    response.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", *texts))
                else:
                    response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
                out = response.to_wire()
                log.append(("response", struct.pack("!H", len(out)) + out))
                self.request.sendall(struct.pack("!H", len(out)) + out)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for name, rdtype in (("a.example.", "A"), ("big.example.", "TXT"), ("c.example.", "A")):
            q = dns.message.make_query(name, rdtype)
            r = dns.query.tcp(q, "127.0.0.1", port=port, sock=sock, timeout=10)
            answers.append(len(r.answer[0]))
    server.shutdown()
    return {"version": dns.version.version, "log": [(k, w.hex()) for k, w in log],
            "answers": answers}  # fmt: skip


# ---------------------------------------------------------------------------- Modbus


def modbus(port: int) -> dict[str, Any]:
    import pymodbus
    from pymodbus.client import ModbusTcpClient
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import StartAsyncTcpServer

    block = ModbusSequentialDataBlock(1, list(range(200)))
    context = ModbusServerContext(devices=ModbusDeviceContext(hr=block), single=True)
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(StartAsyncTcpServer(context, address=("127.0.0.1", port)))

    threading.Thread(target=serve, daemon=True).start()
    client = _retry(lambda: _connected(ModbusTcpClient("127.0.0.1", port=port, timeout=10)))
    calls: list[tuple[int, Any]] = []
    r = client.read_holding_registers(0, count=10)
    calls.append((3, r.registers))
    r = client.write_register(5, 1234)
    calls.append((6, None))
    r = client.write_registers(10, list(range(1000, 1100)))
    calls.append((16, None))
    r = client.read_holding_registers(0, count=120)
    calls.append((3, r.registers))
    client.close()
    return {"version": pymodbus.__version__, "calls": calls}


def _connected(client: Any) -> Any:
    if not client.connect():
        raise ConnectionError("modbus server not up yet")
    return client


def _retry(make: Callable[[], Any], seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return make()
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    scenario, port, truth = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = {"http": http, "dns": dns, "modbus": modbus}[scenario](port)
    with open(truth, "w") as f:
        json.dump(result, f)
