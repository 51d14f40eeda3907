"""What node scripts download as root, and the checks each download passes before it is used.

A provider records each download as a `Pinned` entry; its node scripts put the shell
functions of `pinned_downloads.sh` (bash) above their own steps and call the one that fits:
`pinned_image`, `pinned_apt_key`, `pinned_apt_package` or `pinned_signed_file`. Every one
of them stops with what was expected and what came when the two differ."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pinned:
    """Something a node script downloads as root and checks before using it: a container
    image (`source` repository:tag) by its digest, an apt signing key file (`source` its URL)
    by the fingerprints of its primary keys, an apt package (`source` NAME or NAME=VERSION)
    by the SHA-256 of its file that the signed index lists, or a file signed by its publisher
    (`source` its URL) by a detached signature made with one of the publisher's keys.
    `expected` is dlvm's record of it (sha256:HEX; for a key file or a signed file, the
    primary-key fingerprints of the publisher's keys, space-separated: the key file must hold
    at least one of them and no other), copied from where its publisher gives it; where dlvm
    records none for an image, key or package, each node keeps what its first download gave
    and refuses anything else afterwards (a tag moved, a key replaced, a package version's file
    replaced). A signed file always needs the record: its signature is only as good as the
    keys it is checked with."""

    source: str
    expected: str = ""


# The shell functions that check each kind of download, for the node scripts to include.
PINNED_DOWNLOADS = Path(__file__).with_name("pinned_downloads.sh")
