#!/usr/bin/env bash
# A throwaway certificate authority for the TLS tests, made with the openssl CLI at run time.
# Usage: make_certs.sh DIR NAME...
# Writes DIR/ca.pem (+ key) and for each NAME DIR/NAME.pem and DIR/NAME.key: CN=NAME, subject
# alternative names DNS:NAME, DNS:localhost and IP:127.0.0.1, signed by the CA, valid a day.
# A NAME of the form other-ca/NAME is signed by a second CA (DIR/other-ca/ca.pem) instead.
set -euo pipefail
dir="$1"
shift
make_ca() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=rsd test CA $(basename "$1")" -keyout "$1/ca.key" -out "$1/ca.pem" 2>/dev/null
}
[ -f "$dir/ca.pem" ] || make_ca "$dir"
for name in "$@"; do
  ca_dir="$dir"
  if [[ "$name" == */* ]]; then
    ca_dir="$dir/${name%%/*}"
    [ -f "$ca_dir/ca.pem" ] || make_ca "$ca_dir"
  fi
  out="$dir/$name"
  cn="$(basename "$name")"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" \
    -keyout "$out.key" -out "$out.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$cn" > "$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$ca_dir/ca.pem" -CAkey "$ca_dir/ca.key" \
    -CAcreateserial -days 1 -extfile "$out.ext" -out "$out.pem" 2>/dev/null
  rm -f "$out.csr" "$out.ext"
  chmod 600 "$out.key"
done
