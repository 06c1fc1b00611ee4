"""Signed versions: an HMAC-SHA256 of ``version.json`` under a store key from the environment.

``version.json`` holds the manifest digest and the sha256 of every other document, so one MAC
over it covers the whole version (objects are addressed by their own sha256). The signature is
its own file, ``version.sig``, outside the digest that makes the version id: the id and every
other byte of a version are the same with or without a key, and HMAC is deterministic, so
re-publishing the same content with the same key gives the same bytes.

With ``MEDCURATE_STORE_KEY`` set, an unsigned or wrongly signed version is refused; without it,
versions read as before and a signed one is reported as "signed, not verified".
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import os
from collections import Counter

from medcurate.io import sha256_bytes
from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError

KEY_ENV = "MEDCURATE_STORE_KEY"
SIGNATURE = "version.sig"
ALG = "hmac-sha256"
MIN_KEY_CHARS = 32
MIN_KEY_BITS = 96.0
MAKE_KEY = "python -c 'import secrets; print(secrets.token_hex(32))'"
_CONTEXT = b"medcurate-store-version-v1\n"

VERIFIED = "signature verified"
UNSIGNED = "unsigned"
NOT_VERIFIED = f"signed, not verified (no {KEY_ENV} set)"


class StoreKeyError(StoreError):
    """The configured store key is unusable (too short, low-entropy)."""


class SignatureError(TamperedObjectError):
    """A version is unsigned while a key is configured, or its signature does not match."""


def _estimated_bits(key: str) -> float:
    """Shannon entropy of the characters times the length, scaled by the share of distinct
    4-grams (repeated words), and zero for arithmetic runs (``abcdef...``, ``012345...``)."""
    n = len(key)
    counts = Counter(key)
    shannon = -sum(c / n * math.log2(c / n) for c in counts.values()) * n
    grams = [key[i : i + 4] for i in range(max(n - 3, 1))]
    steps = [ord(b) - ord(a) for a, b in itertools.pairwise(key)]
    runs = sum(1 for a, b in itertools.pairwise(steps) if a == b)
    if steps and runs > len(steps) // 2:
        return 0.0
    return shannon * len(set(grams)) / len(grams)


def check_key(key: str) -> bytes:
    """The key as bytes, or StoreKeyError when it is short or low-entropy (never echoed)."""
    how = f"make one with: {MAKE_KEY}"
    if len(key) < MIN_KEY_CHARS:
        raise StoreKeyError(f"{KEY_ENV} is too short ({len(key)} < {MIN_KEY_CHARS} chars); {how}")
    if _estimated_bits(key) < MIN_KEY_BITS:
        raise StoreKeyError(f"{KEY_ENV} is low-entropy (repeated or sequential); {how}")
    return key.encode()


def store_key() -> bytes | None:
    """The key of ``MEDCURATE_STORE_KEY`` (surrounding whitespace dropped), or None if unset."""
    raw = os.environ.get(KEY_ENV, "").strip()
    return check_key(raw) if raw else None


def key_id(key: bytes) -> str:
    """A short fingerprint of the key, so a refusal can say "signed with another key"."""
    return sha256_bytes(b"medcurate-store-key-id\n" + key)[:16]


def signature_bytes(version_json: bytes, key: bytes) -> bytes:
    mac = hmac.new(key, _CONTEXT + version_json, hashlib.sha256).hexdigest()
    doc = {"alg": ALG, "key_id": key_id(key), "mac": mac}
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()


def verify(store: ObjectStore, ref: str, folder: str, version_json: bytes) -> str:
    """Check ``folder``'s version.sig against ``version_json``; returns the status line.

    With a key: VERIFIED or SignatureError. Without: UNSIGNED or NOT_VERIFIED.
    """
    key = store_key()
    sig_path = f"{folder}/{SIGNATURE}"
    present = store.exists(sig_path)
    if key is None:
        return NOT_VERIFIED if present else UNSIGNED
    if not present:
        raise SignatureError(
            f"{ref} is unsigned and {KEY_ENV} is set: refusing it (only versions signed "
            "with the store key are accepted)"
        )
    try:
        doc = json.loads(store.read_bytes(sig_path))
        alg, kid, mac = doc["alg"], doc["key_id"], doc["mac"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{ref}: {SIGNATURE} is malformed; refusing the version") from exc
    expected = json.loads(signature_bytes(version_json, key))["mac"]
    if alg != ALG or not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
        why = (
            "it was signed with another key"
            if kid != key_id(key)
            else "version.json was modified after signing"
        )
        raise SignatureError(
            f"{ref}: signature does not match {KEY_ENV} ({why}); refusing the version"
        )
    return VERIFIED
