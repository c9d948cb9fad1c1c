#!/usr/bin/env bash
# Creates the keys the local compose stack mounts as secrets, in deploy/secrets/
# (git-ignored). For the local stack only: in production the JWT public key
# comes from your identity provider and the licence key from your key store.
#
#   secrets/idp/dev-signing-key.pem      stand-in identity provider's private key
#                                        (mints tokens, see README.md)
#   secrets/idp/dev-signing-key.pub.pem  its public key
#   secrets/jwt-public.pem               the same public key: what gatekeeper verifies
#   secrets/license-key.pem              Ed25519 PKCS#8 key that signs licences and
#                                        audit checkpoints
#
# Existing keys are kept (a new licence key would orphan issued licences).
set -euo pipefail
cd "$(dirname "$0")"
command -v openssl >/dev/null || { echo "make-local-keys.sh: openssl is required" >&2; exit 1; }

umask 077
mkdir -p secrets/idp
if [[ ! -s secrets/idp/dev-signing-key.pem ]]; then
  openssl genpkey -algorithm ed25519 -out secrets/idp/dev-signing-key.pem
  openssl pkey -in secrets/idp/dev-signing-key.pem -pubout -out secrets/idp/dev-signing-key.pub.pem
  echo "created secrets/idp/dev-signing-key.pem (+ .pub.pem)"
fi
cp secrets/idp/dev-signing-key.pub.pem secrets/jwt-public.pem
if [[ ! -s secrets/license-key.pem ]]; then
  openssl genpkey -algorithm ed25519 -out secrets/license-key.pem
  echo "created secrets/license-key.pem"
fi

# Compose bind-mounts file secrets with the host's owner and mode, and the
# container runs as uid 10001: hand the files to that uid when we can,
# otherwise make them world-readable (acceptable for throw-away local keys).
if [[ $(id -u) -eq 0 ]]; then
  chown -R 10001:10001 secrets
  chmod 0500 secrets/idp && chmod 0400 secrets/idp/* secrets/license-key.pem
  chmod 0444 secrets/jwt-public.pem && chmod 0755 secrets
else
  chmod 0755 secrets secrets/idp
  chmod 0644 secrets/idp/* secrets/jwt-public.pem secrets/license-key.pem
  echo "note: keys made world-readable so uid 10001 in the container can read them (local use only)"
fi
