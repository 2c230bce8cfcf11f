"""pluto's NSS database: trust anchors and the host identity under a stable nickname.

``database`` is one database (listing, verifying, the primitive deletes and imports), built
on ``tools`` (running certutil/pk12util, explaining their failures), ``password`` (the
database password, handed over as a file), ``certs`` (fingerprints and key ids) and
``anchors`` (trust anchors). ``swap`` replaces the identity without duplicates or orphaned
keys: ``rehearsal`` tries it on a copy first, ``journal`` backs up, records and restores so
a killed swap can be finished or undone, ``identity`` holds the checks around it.
"""

from oeagent.nss.anchors import ANCHOR_TRUST
from oeagent.nss.certs import fingerprint, is_ca, key_id, load_pem_bundle
from oeagent.nss.database import CertEntry, KeyEntry, NssDatabase
from oeagent.nss.password import parse_password_file
from oeagent.nss.swap import IdentityKey, InstallResult, install_identity, recover

__all__ = [
    "ANCHOR_TRUST",
    "CertEntry",
    "IdentityKey",
    "InstallResult",
    "KeyEntry",
    "NssDatabase",
    "fingerprint",
    "install_identity",
    "is_ca",
    "key_id",
    "load_pem_bundle",
    "parse_password_file",
    "recover",
]
