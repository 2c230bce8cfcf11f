"""``python -m lab up|down|status DIR``: run a lab in DIR from a shell (``make lab-up``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lab.core import Lab
from lab.procs import LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("action", choices=("up", "down", "status", "info"))
    parser.add_argument("dir", type=Path, help="the lab directory (created if missing)")
    parser.add_argument("--cert-validity", type=int, metavar="SECONDS",
                        help="lifetime of the certificates Pebble issues (default: Pebble's)")
    parser.add_argument("--eab", action="store_true",
                        help="Pebble requires External Account Binding; the key id and HMAC "
                             "key (DIR/eab.key) are in DIR/oeagent.toml")
    args = parser.parse_args(argv)
    lab = Lab(args.dir, cert_validity_seconds=args.cert_validity, eab=args.eab)
    started = time.monotonic()
    try:
        if args.action == "up":
            info = lab.up()
            print(f"lab up in {info.dir} ({time.monotonic() - started:.1f} s)")
            print(f"  ACME directory   {info.acme_directory}  (CA bundle {info.https_ca_pem})")
            print(f"  Pebble root      {info.pebble_root_pem}")
            print(f"  http-01 port     127.0.0.1:{info.http_port}")
            print(f"  BIND             127.0.0.1:{info.bind_port}  zones {info.zone} (signed), "
                  f"{info.plain_zone}; TSIG {info.tsig_key_name} in {info.tsig_key_file}")
            print(f"  unbound          127.0.0.1:{info.unbound_port}  (validating)")
            if info.eab_kid:
                print(f"  EAB required     key id {info.eab_kid}, HMAC key in "
                      f"{info.eab_key_file}")
            print(f"  oeagent config   {info.config_path}")
        elif args.action == "down":
            lab.down()
            print(f"lab down in {lab.dir} ({time.monotonic() - started:.1f} s)")
        elif args.action == "info":
            print(json.dumps(lab.info.to_json(), indent=2))
        else:
            status = lab.status()
            if not status:
                print(f"no lab running in {lab.dir}")
                return 3
            for name, running in status.items():
                print(f"{name:8} {'running' if running else 'STOPPED'}")
            return 0 if all(status.values()) else 1
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
