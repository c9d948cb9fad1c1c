"""Receive and verify license-gatekeeper webhooks (Standard Webhooks).

    WEBHOOK_SECRET=whsec_... python3 webhook_receiver_check.py [PORT]

Listens on 127.0.0.1:PORT (default 8000) for one endpoint's deliveries and
verifies each with the `standardwebhooks` package: its signature with the
endpoint's secret, and a timestamp within 5 minutes. A verified event is
answered 204 and printed once, as one JSON line {"id", "type", "timestamp",
"data"}; delivery is at least once, so a repeat (the same webhook-id) is
answered 204 again and not printed. Anything unverified is answered 400.
Needs `standardwebhooks` (pip install standardwebhooks==1.1.0).
"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen = set()  # webhook-ids done; keep them where you keep what you did with them

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            event = webhook.verify(body, dict(self.headers))
        except (WebhookVerificationError, ValueError) as e:
            print("refused:", e, file=sys.stderr, flush=True)
            self.send_response(400)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        if msg_id not in seen:
            seen.add(msg_id)
            print(json.dumps({"id": msg_id, **event}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # only the events on stdout
        pass

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
