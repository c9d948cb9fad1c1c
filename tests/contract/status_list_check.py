"""Check a licence offline with its status list (IETF Token Status List).

    python3 status_list_check.py LICENCE STATUS_LIST JWKS

LICENCE is the licence token, or the JSON that POST /v1/licenses answered;
STATUS_LIST the token GET <the licence's status uri> answered; JWKS what
GET /v1/keys answered. Verifies both signatures (Ed25519, with the key each
header names), that the list is the one the licence names and not expired,
then prints the licence id and its status: valid, invalid (revoked, or ended
by a designation), suspended, or expired. Exit status 0 only for valid.
Needs `cryptography` (pip install cryptography); all else is the stdlib.
"""
import base64, json, sys, time, zlib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

def b64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

def verified(jwt, typ, keys):
    head, body, sig = jwt.split(".")
    header = json.loads(b64(head))
    if header.get("alg") != "EdDSA" or header.get("typ") != typ:
        sys.exit(f"not an EdDSA {typ}: {header}")
    key = next(k for k in keys if k["kid"] == header["kid"])
    # Raises InvalidSignature if the token was not signed by that key.
    Ed25519PublicKey.from_public_bytes(b64(key["x"])).verify(b64(sig), f"{head}.{body}".encode())
    return json.loads(b64(body))

licence_file, list_file, jwks_file = sys.argv[1:4]
text = open(licence_file).read().strip()
token = json.loads(text)["license"]["token"] if text.startswith("{") else text
keys = json.load(open(jwks_file))["keys"]
licence = verified(token, "JWT", keys)
ref = licence["status"]["status_list"]
status_list = verified(open(list_file).read().strip(), "statuslist+jwt", keys)
now = time.time()
if status_list["sub"] != ref["uri"]:
    sys.exit(f"this is list {status_list['sub']}, the licence is in {ref['uri']}")
if status_list["exp"] <= now:
    sys.exit("the status list has expired: fetch it again")
bits, idx = status_list["status_list"]["bits"], ref["idx"]
lst = zlib.decompressobj().decompress(b64(status_list["status_list"]["lst"]), 16 << 20)
if idx * bits // 8 >= len(lst):
    sys.exit(f"the list holds no entry {idx}")
value = (lst[idx * bits // 8] >> (idx * bits % 8)) & ((1 << bits) - 1)
status = {0: "valid", 1: "invalid", 2: "suspended"}.get(value, f"status {value}")
if status == "valid" and licence["exp"] <= now:
    status = "expired"
print(licence["sub"], status)
sys.exit(0 if status == "valid" else 1)
