#!/usr/bin/env bash
# Generates a development CA and a server certificate (and a client certificate, for mTLS between a sidecar and
# a central Lakegate) into a directory, default ./certs/dev. Nothing generated here is committed: these keys
# have no value outside one developer's machine.
#
#   certs/gen-dev.sh [OUT_DIR] [SERVER_NAMES]     e.g. certs/gen-dev.sh certs/dev "localhost,127.0.0.1,lakegate"
set -euo pipefail
out=${1:-"$(dirname "$0")/dev"}
names=${2:-"localhost,127.0.0.1"}
mkdir -p "$out"
cd "$out"
umask 077

san=""
IFS=',' read -ra parts <<< "$names"
for n in "${parts[@]}"; do
  if [[ $n =~ ^[0-9.]+$ ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=Lakegate dev CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() { # name subject extended-key-usage subject-alt-names
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server "lakegate" serverAuth "subjectAltName=$san"
issue client "lakegate-sidecar" clientAuth ""
rm -f ca.srl
echo "wrote $(pwd)/{ca,server,client}.{crt,key}"
