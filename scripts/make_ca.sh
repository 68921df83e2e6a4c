#!/usr/bin/env bash
# Make a local certificate authority and a Mosquitto server certificate signed by it.
#
#   scripts/make_ca.sh OUT_DIR [NAME ...]
#
# Writes into OUT_DIR (created 0700; keys 0600):
#   ca.crt ca.key          the CA (EC P-256, 10 years); clients trust ca.crt (--mqtt-tls-ca)
#   server.crt server.key  the broker (EC P-256, 825 days), subject alternative names
#                          IP 127.0.0.1, DNS localhost, DNS mosquitto and every NAME given
#                          (a NAME made of digits and dots is an IP address)
# An existing CA is kept (clients keep trusting it) and the server certificate is re-issued
# only when missing. Remove OUT_DIR to start over. Needs the openssl command.
set -euo pipefail

die() { printf 'make_ca: ERROR: %s\n' "$*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: $0 OUT_DIR [NAME ...]"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

out=$1
shift
mkdir -p "$out"
chmod 700 "$out"
cd "$out"
umask 077

san="IP:127.0.0.1,DNS:localhost,DNS:mosquitto"
for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ ]]; then san="$san,IP:$name"; else san="$san,DNS:$name"; fi
done

if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout ca.key -out ca.crt -days 3650 -subj "/CN=citybrain local CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null
    rm -f server.crt server.key
fi

issued=kept
if [ ! -s server.key ] || [ ! -s server.crt ]; then
    issued="issued for $san"
    ext=$(mktemp)
    trap 'rm -f "$ext" server.csr' EXIT
    cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout server.key -out server.csr -subj "/CN=mosquitto" 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out server.crt -days 825 -sha256 -extfile "$ext" 2>/dev/null
    rm -f server.csr ca.srl
fi

chmod 600 ca.key server.key
chmod 644 ca.crt server.crt
openssl verify -CAfile ca.crt server.crt >/dev/null || die "server.crt does not verify"
printf 'make_ca: CA %s/ca.crt, server certificate %s/server.crt (%s)\n' "$PWD" "$PWD" "$issued"
