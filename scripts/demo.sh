#!/usr/bin/env bash
# make demo: bring up a fresh local lab, enroll this "host" against the lab's real ACME CA,
# show the certificate in libreswan's NSS database, advertise it in the DNSSEC-signed zone,
# then stop the lab (KEEP_LAB=1 keeps it). Finally the end-to-end scenario: real pluto peers in
# network namespaces (server, webonly, client, plain, impostor) and a table of what pluto did.
set -euo pipefail
LAB=${1:-$PWD/.lab/demo}
PY=.venv/bin/python
OEAGENT=.venv/bin/oeagent

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -f "$LAB/lab.json" ]; then $PY -m lab down "$LAB" >/dev/null 2>&1 || true; fi
rm -rf "$LAB"
if [ "${KEEP_LAB:-0}" != 1 ]; then trap '$PY -m lab down "$LAB" >/dev/null 2>&1 || true' EXIT; fi

say "Starting the lab in $LAB (Pebble ACME CA, BIND with a DNSSEC-signed zone, unbound)"
$PY -m lab up "$LAB"

say "oeagent enroll (http-01, built-in responder)"
$OEAGENT --config "$LAB/oeagent.toml" enroll

say "Running it again: nothing is due, so nothing is issued"
$OEAGENT --config "$LAB/oeagent.toml" enroll

NSS=$(sed -n 's/^database = "\(sql:[^"]*\)".*/\1/p' "$LAB/oeagent.toml" | head -1)
say "The NSS database $NSS (certutil -L)"
certutil -L -d "$NSS"

say "The enrolled certificate under nickname 'oeagent'"
certutil -L -d "$NSS" -n oeagent -a | openssl x509 -noout -subject -issuer -serial -dates -ext subjectAltName

say "Verified for pluto's use (certutil -V -u V)"
certutil -V -u V -d "$NSS" -n oeagent

say "Advertising it: TLSA, IPSECKEY and _oe TXT by RFC 2136 into the signed zone (plan first)"
sed -i 's/^backends = \[\]/backends = ["rfc2136"]/' "$LAB/oeagent.toml"
$OEAGENT --config "$LAB/oeagent.toml" publish --dry-run
$OEAGENT --config "$LAB/oeagent.toml" publish

UNBOUND=$(sed -n 's/^resolver_port = \([0-9]*\)/\1/p' "$LAB/oeagent.toml" | head -1)
say "What a client sees through the validating resolver (note the 'ad' flag)"
dig +dnssec +noall +comments +answer -p "$UNBOUND" @127.0.0.1 _500._udp.server.oe.test TLSA | grep -E 'flags|TLSA'
dig +noall +answer -p "$UNBOUND" @127.0.0.1 server.oe.test IPSECKEY
dig +noall +answer -p "$UNBOUND" @127.0.0.1 _oe.server.oe.test TXT

STATE=$(sed -n 's/^state_dir = "\([^"]*\)".*/\1/p' "$LAB/oeagent.toml" | head -1)
say "oeagent's state directory (private: 0700 directories, 0600 keys)"
find "$STATE" -printf '%M  %p\n' | sort -k2

E2E=$(mktemp -d /tmp/oe6-demo-XXXX)   # short: pluto's control socket paths must fit
trap 'rm -rf "$E2E"' EXIT
if [ "${KEEP_LAB:-0}" != 1 ]; then trap '$PY -m lab down "$LAB" >/dev/null 2>&1 || true; rm -rf "$E2E"' EXIT; fi
say "End to end: oeagent on real pluto peers, one network namespace per host (198.51.100.0/24)"
echo "lab services .2, server .10 (server.oe.test, signed zone), webonly .11"
echo "(web.insecure.oe.test, unsigned), client .20, plain .30 (NULL OE only), impostor .40"
$PY -m lab.e2e "$E2E"

if [ "${KEEP_LAB:-0}" = 1 ]; then
  say "The lab keeps running: oeagent --config $LAB/oeagent.toml ...; stop it with: make lab-down LAB=$LAB"
else
  say "Stopping the lab (KEEP_LAB=1 make demo keeps it running)"
fi
