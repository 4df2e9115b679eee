#!/usr/bin/env python3
"""range_server.py - a tiny HTTP/1.1 file server with Range support, for the pull tests.

usage: range_server.py DIR PORTFILE LOGFILE
  Serves DIR on 127.0.0.1 (a free port, written to PORTFILE). Every request is appended to
  LOGFILE as "METHOD PATH RANGE". Behaviour per file, set by files beside it in DIR:
    NAME.sha256   its text is sent as the X-Linked-ETag header (as Hugging Face does)
    NAME.cut      the first request for NAME is cut (connection closed) after that many bytes
    NAME.norange  Range is ignored (200 with the whole file)
"""
import http.server
import os
import socketserver
import sys

root, portfile, logfile = sys.argv[1], sys.argv[2], sys.argv[3]
cut_done = set()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        name = os.path.basename(self.path.split("?")[0])
        path = os.path.join(root, name)
        rng = self.headers.get("Range", "")
        with open(logfile, "a") as f:
            f.write("%s %s %s\n" % (self.command, self.path, rng or "-"))
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + name)
            if os.path.exists(path + ".sha256"):
                self.send_header("X-Linked-ETag", '"%s"' % open(path + ".sha256").read().strip())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not name or not os.path.isfile(path):
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data = open(path, "rb").read()
        start = 0
        if rng.startswith("bytes=") and not os.path.exists(path + ".norange"):
            a = rng[6:].split("-")[0]
            start = int(a)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        if os.path.exists(path + ".sha256"):
            self.send_header("X-Linked-ETag", '"%s"' % open(path + ".sha256").read().strip())
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        body = data[start:]
        if os.path.exists(path + ".cut") and name not in cut_done:
            cut_done.add(name)
            n = int(open(path + ".cut").read().strip())
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = Server(("127.0.0.1", 0), Handler)
with open(portfile + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(portfile + ".tmp", portfile)
srv.serve_forever()
