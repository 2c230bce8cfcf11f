"""The oeagent test lab: Pebble, a DNSSEC-signed BIND zone and a validating unbound on loopback.

    from lab import Lab
    lab = Lab(Path("/tmp/lab"))
    info = lab.up()      # LabInfo: URLs, ports, key and PEM paths, oeagent.toml
    ...
    lab.down()

Or from a shell: ``python -m lab up|down|status DIR``.
"""

from lab.core import Lab, LabInfo
from lab.procs import LabError

__all__ = ["Lab", "LabError", "LabInfo"]
