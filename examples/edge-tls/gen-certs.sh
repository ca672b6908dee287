#!/usr/bin/env bash
# Generate the example's PKI with openssl into ./certs: a CA, an ECDSA certificate for
# example.test and *.example.test, an RSA certificate for legacy.test, and a client certificate
# carrying a SPIFFE id. Run again with --force to replace them (e.g. to try a rotation).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p certs
cd certs
if [[ -f ca.crt && "${1:-}" != "--force" ]]; then
  exit 0
fi

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [[ ! -f ca.key ]]; then
  ec ca.key
  openssl req -x509 -new -key ca.key -days 365 -subj "/CN=Sluice example CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt
fi

# sign NAME SUBJECT EXTENSIONS: NAME.key must exist; writes NAME.crt signed by the CA.
sign() {
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%b' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ec example.key
sign example "/CN=example.test" \
  "subjectAltName=DNS:example.test,DNS:*.example.test\nextendedKeyUsage=serverAuth"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out legacy.key 2>/dev/null
sign legacy "/CN=legacy.test" "subjectAltName=DNS:legacy.test\nextendedKeyUsage=serverAuth"

ec client.key
sign client "/O=Example/CN=billing" \
  "subjectAltName=URI:spiffe://example.org/ns/prod/sa/billing\nextendedKeyUsage=clientAuth"

echo "certificates written to $(pwd)"
