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

# New leaf keys and certificates are written aside and renamed into place together at the end,
# as a rotation should be: a running gateway never sees a key without its certificate.
next="$(mktemp -d .next.XXXXXX)"
trap 'rm -rf "$next"' EXIT

# sign NAME SUBJECT EXTENSIONS: $next/NAME.key must exist; writes $next/NAME.crt signed by the CA.
sign() {
  openssl req -new -key "$next/$1.key" -subj "$2" -out "$next/$1.csr"
  printf '%b' "$3" > "$next/$1.ext"
  openssl x509 -req -in "$next/$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 \
    -extfile "$next/$1.ext" -out "$next/$1.crt" 2>/dev/null
  rm -f "$next/$1.csr" "$next/$1.ext"
}

ec "$next/example.key"
sign example "/CN=example.test" \
  "subjectAltName=DNS:example.test,DNS:*.example.test\nextendedKeyUsage=serverAuth"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$next/legacy.key" 2>/dev/null
sign legacy "/CN=legacy.test" "subjectAltName=DNS:legacy.test\nextendedKeyUsage=serverAuth"

ec "$next/client.key"
sign client "/O=Example/CN=billing" \
  "subjectAltName=URI:spiffe://example.org/ns/prod/sa/billing\nextendedKeyUsage=clientAuth"

for f in example legacy client; do
  mv -f "$next/$f.key" "$f.key"
  mv -f "$next/$f.crt" "$f.crt"
done
echo "certificates written to $(pwd)"
