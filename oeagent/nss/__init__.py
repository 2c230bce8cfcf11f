"""pluto's NSS database: trust anchors and the host identity under a stable nickname.

``database`` wraps certutil/pk12util; ``swap`` replaces the identity without duplicates or
orphaned keys and with a rollback (see its docstring for the journaled swap).
"""

from oeagent.nss.database import (
    ANCHOR_TRUST,
    CertEntry,
    KeyEntry,
    NssDatabase,
    fingerprint,
    is_ca,
    key_id,
    load_pem_bundle,
)
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
