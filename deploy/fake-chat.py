#!/usr/bin/env python3
"""A stand-in chat for trying alert-relay (README.md, "Run the alert relay"): listens on
127.0.0.1:9999, prints the title of every message the relay posts, and answers 200 so the
relay counts it as delivered. Standard library only."""

import json
from http.server import BaseHTTPRequestHandler, HTTPServer


class Chat(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            title = json.loads(body).get("title", "")
        except ValueError:
            title = body[:200].decode("utf-8", "replace")
        print(f"chat: {title}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print("fake chat listening on http://127.0.0.1:9999/", flush=True)
    HTTPServer(("127.0.0.1", 9999), Chat).serve_forever()
