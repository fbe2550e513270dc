"""Fetching one file over HTTP(S): a progress bar, resuming where an interrupted download stopped, SHA-256.

A download grows in `<dest>.part`; only a complete file whose digest checks out is renamed to `<dest>`, so a
file under its final name is always whole. Resuming sends `Range` with `If-Range` (the server's ETag or
Last-Modified of the first attempt): a server whose file changed, or that ignores ranges, answers with the whole
file and the download restarts from zero.
"""
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from tqdm import tqdm

from common.errors import TimeMAEError

CHUNK = 1 << 16
TIMEOUT_S = 60


class Unreachable(TimeMAEError):
    """The publisher's host could not be reached (no network): the caller says how to go on offline."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason   # what failed, without the advice: the caller words its own


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url, dest, sha256=None, log=print):
    """Download `url` to `dest` (unless a verified copy is there) and return `dest`.

    sha256: the digest recorded for this file, or None (then the digest is printed so it can be recorded, unless
    a .zip download is no zip archive)."""
    name = os.path.basename(dest)
    if os.path.isfile(dest):
        if sha256 is None or sha256_of(dest) == sha256:
            log(f"{name}: using the downloaded copy {dest}")
            return dest
        log(f"{name}: the downloaded copy does not match the recorded SHA-256; downloading it again")
        os.remove(dest)
    part = dest + ".part"
    _download(url, part, name)
    log(f"{name}: downloaded {os.path.getsize(part)} bytes from {url}")
    digest = sha256_of(part)
    if sha256 is not None and digest != sha256:
        os.remove(part)
        _remove_validator(part)
        raise TimeMAEError(f"{name} from {url} has SHA-256 {digest}, not the recorded {sha256}: the file is "
                           "corrupt or was changed, so it was deleted and nothing was prepared")
    if sha256 is None and (not name.endswith(".zip") or zipfile.is_zipfile(part)):  # not an error page's digest
        log(f"{name}: SHA-256 {digest} (no digest is recorded for this file in data/catalog.py; add it there "
            "to pin this version)")
    os.replace(part, dest)
    _remove_validator(part)
    return dest


def _validator_path(part):
    return part + ".validator"


def _remove_validator(part):
    if os.path.exists(_validator_path(part)):
        os.remove(_validator_path(part))


def _download(url, part, name):
    """Bring `part` up to the whole file, resuming from its current size when the server allows it."""
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    validator = None
    if have and os.path.isfile(_validator_path(part)):
        with open(_validator_path(part)) as f:
            validator = f.read().strip() or None
    headers = {"User-Agent": "TimeMAE-data-prepare"}
    if have and validator:  # without a validator a resumed file could mix two versions: start over instead
        headers.update({"Range": f"bytes={have}-", "If-Range": validator})
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and "Range" in headers:  # nothing left past our bytes: the range was stale, start over
            os.remove(part)
            return _download(url, part, name)
        raise TimeMAEError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        host = urllib.parse.urlsplit(url).netloc
        what = f"cannot reach {host} to download {name} ({reason})"
        raise Unreachable(f"{what}; this machine looks offline: download {url} elsewhere and pass it with --source",
                          what) from None
    os.makedirs(os.path.dirname(os.path.abspath(part)), exist_ok=True)
    with response:
        resumed = "Range" in headers and response.status == 206
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        if not resumed:
            new_validator = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
            with open(_validator_path(part), "w") as f:
                f.write(new_validator)
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                     leave=False) as bar:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as e:
                raise TimeMAEError(f"downloading {name} was interrupted after {f.tell()} bytes ({e}); run the "
                                   "same command again to resume") from None
            size = f.tell()
    if total is not None and size != total:  # http.client ends a cut-off body silently
        raise TimeMAEError(f"downloading {name} was interrupted after {size} of {total} bytes (the connection "
                           "closed early); run the same command again to resume")
