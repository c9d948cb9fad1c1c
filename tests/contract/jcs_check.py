#!/usr/bin/env python3
"""Checks the audit trail's hashes with an independent RFC 8785 (JCS) implementation.

An event's `hash` is the SHA-256 of the JCS canonical JSON of the event without `hash`, and
each line of the NDJSON export is exactly the JCS canonical JSON of its whole event. This
script checks both with Python's `rfc8785` package (pinned by tests/contract/run.sh), on:

1. the service's own export, after creating, through the API, events whose strings hold
   non-ASCII letters, quotes, backslashes, control characters and emoji;
2. a chain it builds itself whose object keys hold such characters (events written by the
   service have fixed keys, so keys can be tested only this way): `gatekeeper audit verify
   --file`, which refuses any line that is not exactly its canonical JSON, must accept it, and
   must refuse the same chain with keys in UTF-8 (code point) order instead of JCS's UTF-16
   order.

It exits non-zero, naming the event, on the first difference.

    jcs_check.py BASE_URL GATEKEEPER_BIN   (tokens in ADMIN_TOKEN, RESELLER_TOKEN, COMPLIANCE_TOKEN)
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

import rfc8785

BASE, BIN = sys.argv[1], sys.argv[2]
GENESIS = "0" * 64

# What the created events must hold, each exactly, somewhere in the export.
TRICKY = [
    "Zoë Ærøskøbing \"Quote\" back\\slash",
    "ctrl \u0001 tab\t newline\n cr\r unit\u001f del\u007f end",
    "emoji 😀 🇩🇪 and U+FB33 \ufb33 and U+E000 \ue000",
    "line sep \u2028 para sep \u2029 bom \ufeff",
    "日本語の顧客 «ü» — €",
]


def fail(message):
    print(f"jcs_check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def call(method, path, token, body=None, accept="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", accept)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def jcs_hash(event):
    without = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(rfc8785.dumps(without)).hexdigest()


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def create_tricky_events():
    admin, reseller = os.environ["ADMIN_TOKEN"], os.environ["RESELLER_TOKEN"]
    for path, body in [
        ("/v1/resellers/acme", {"name": TRICKY[0], "country": "DE", "us_person": False}),
        ("/v1/organizations/jcs-org", {"name": TRICKY[1], "country": "DE", "aliases": TRICKY[2:4]}),
        ("/v1/products/JCS-PRODUCT",
         {"name": TRICKY[3], "vendor": "jcs-org", "category": "firewall", "components": ["KAV-ENGINE"]}),
    ]:
        status, text = call("PUT", path, admin, body)
        if status not in (200, 201):
            fail(f"PUT {path} answered {status}: {text[:300]!r}")
    # A customer's name may hold any letters but no control or format character
    # (the BOM is one): those two strings are in the catalogue's names above, and
    # refused as a customer's.
    for number, name in enumerate(TRICKY):
        body = {"transaction": "issue", "product": "JCS-PRODUCT",
                "customer": {"id": "jcs-customer", "name": name, "country": "US"}}
        status, text = call("POST", "/v1/decisions", reseller, body)
        expected = 422 if number in (1, 3) else 200
        if status != expected:
            fail(f"POST /v1/decisions with name {name!r} answered {status}, not {expected}: {text[:300]!r}")


def check_export():
    status, body = call("GET", "/v1/audit", os.environ["COMPLIANCE_TOKEN"],
                        accept="application/x-ndjson")
    if status != 200:
        fail(f"the export answered {status}")
    if not body.endswith(b"\n"):
        fail("the export does not end with a line end")
    lines = body[:-1].split(b"\n")
    seen = set()
    prev = GENESIS
    for number, line in enumerate(lines, 1):
        event = json.loads(line)
        where = f"line {number} (seq {event.get('seq')})"
        if rfc8785.dumps(event) != line:
            fail(f"{where} is not its RFC 8785 canonical JSON:\n  {line!r}\n  {rfc8785.dumps(event)!r}")
        if jcs_hash(event) != event["hash"]:
            fail(f"{where}: hash {event['hash']} is not SHA-256 of the JCS form without hash ({jcs_hash(event)})")
        if event["prev_hash"] != prev or event["seq"] != number:
            fail(f"{where} does not link to the line before it")
        prev = event["hash"]
        seen.update(strings(event))
    missing = [t for t in TRICKY if t not in seen]
    if missing:
        fail(f"the export lacks the created strings {missing!r}: nothing tricky was checked")
    print(f"jcs_check: {len(lines)} exported events: every line canonical and every hash equal "
          f"to rfc8785's, {len(TRICKY)} tricky strings among them")


def chain(sort_keys_by_utf8):
    """Three sealed events whose keys need JCS's UTF-16 order, as NDJSON."""
    prev, out = GENESIS, []
    for seq in (1, 2, 3):
        event = {
            "seq": seq, "action": "jcs.check", "prev_hash": prev,
            "subject": {
                # U+FB33 sorts after the emoji in UTF-16, before it in UTF-8.
                "\ufb33 dalet": 1, "😀 emoji": 2, "\ue000 private": 3,
                "quote \" back \\ ctrl \u0001\t\n": [seq, None, True],
                "é": "é", "e": "e", "": "empty key", "\u007f": {"ü": [], "u": {}},
            },
        }
        event["hash"] = jcs_hash(event)
        prev = event["hash"]
        if sort_keys_by_utf8:
            line = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            out.append(line.encode())
        else:
            out.append(rfc8785.dumps(event))
    return b"".join(line + b"\n" for line in out)


def check_keys():
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "keys.ndjson")
        verdicts = {}
        for utf8 in (False, True):
            with open(path, "wb") as f:
                f.write(chain(utf8))
            run = subprocess.run([BIN, "audit", "verify", "--file", path],
                                 capture_output=True, text=True, env={**os.environ})
            try:
                verdicts[utf8] = (run.returncode, json.loads(run.stdout))
            except json.JSONDecodeError:
                fail(f"gatekeeper audit verify printed no report: {run.stderr}")
    code, report = verdicts[False]
    if code != 0 or not report["ok"] or report["events_checked"] != 3:
        fail(f"gatekeeper refused a chain canonicalised by rfc8785: {report}")
    code, report = verdicts[True]
    if code == 0 or report["reason"] != "not_canonical":
        fail(f"gatekeeper accepted keys in UTF-8 order instead of UTF-16 order: {report}")
    print("jcs_check: keys with emoji, U+FB33, U+E000, quotes, backslashes and controls: "
          "gatekeeper accepts rfc8785's lines and refuses UTF-8 key order")


if __name__ == "__main__":
    create_tricky_events()
    check_export()
    check_keys()
