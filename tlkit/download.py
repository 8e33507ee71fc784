"""Cached, checksummed, resumable downloads with an error that says what to do when the machine is offline.

Kept so that old imports keep working; the code lives in the private tlkit._support.fetch (built on pooch).
"""

from tlkit._support.fetch import (
    MARKER_NAME,
    ChecksumError,
    DownloadError,
    OfflineError,
    download,
    download_and_extract,
    fetch_pypi_wheel,
)

__all__ = ["MARKER_NAME", "ChecksumError", "DownloadError", "OfflineError", "download", "download_and_extract",
           "fetch_pypi_wheel"]
