"""Fetch a model bundle into a bundle volume: the chart's init container for ``bundle.source`` url/oci.

    python -m bundle.fetch --dest /models --link current url https://host/bundle.tar.gz --sha256 <hex>
    python -m bundle.fetch --dest /models --link current oci registry.example/turnwise-bundle:v3

- ``url``: an HTTP(S) ``.tar.gz`` (or plain ``.tar``) of the bundle directory, checked against its
  sha256 *before* it is unpacked. Version name: ``url-<first 16 hex of the sha256>``.
- ``oci``: an OCI artifact (or image) whose manifest has the bundle as a tar(+gzip) layer, e.g. pushed
  with ``oras push registry/repo:tag bundle.tar.gz`` or ``oras push registry/repo:tag bundle/``. Speaks
  the OCI distribution API: anonymous or Basic credentials from a docker ``config.json``
  (``--auth-file``, a mounted ``kubernetes.io/dockerconfigjson`` Secret), Bearer tokens from the
  registry's ``WWW-Authenticate`` challenge. Every blob is checked against its digest. Version name:
  ``oci-<first 16 hex of the manifest digest>``.

Either way the unpacked tree must hold exactly one ``bundle.json``; that directory is checked with the
bundle's own checksums and its seal ``SHA256SUMS`` (:func:`bundle.manifest.verify`; an archive without
the seal is refused) and then published with the same layout and
rules as the image init container: ``<dest>/<version>/`` claimed with an atomic symlink (safe with
several pods seeding one shared volume), and ``<dest>/<link>`` re-pointed only the first time this
version is seeded, so a restart never rolls back a version the training sidecar published later.
Archives with absolute paths, ``..``, links or devices are refused.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from bundle.errors import BundleError
from bundle.manifest import read_manifest, verify
from turnwise.names import BUNDLE_MANIFEST

CHUNK = 1 << 20
TIMEOUT_S = 60
OCI_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
REFERENCE = re.compile(
    r"^(?P<registry>[a-z0-9.-]+(:[0-9]+)?)/(?P<repo>[^:@]+)"
    r"(:(?P<tag>[A-Za-z0-9_.-]+)|@(?P<digest>sha256:[0-9a-f]{64}))$"
)


class FetchError(BundleError):
    """The bundle could not be fetched, failed a digest check or is not a valid bundle."""


# ------------------------------------------------------------------------------------ publishing


def seed(dest: Path, link: str, version: str, fill: Callable[[Path], None], *, host: str | None = None) -> Path:
    """Make ``dest/version`` hold a verified bundle (``fill`` writes one into a scratch directory) and
    point ``dest/link`` at it unless this version was seeded before. Returns the served directory."""
    host = host or socket.gethostname()
    target = dest / version
    if not (target / BUNDLE_MANIFEST).is_file():
        scratch = dest / f".{version}.{host}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            fill(scratch)
            root = bundle_root(scratch)
            verify(root, read_manifest(root))
            if root != scratch:  # the archive had a top directory: serve that one
                inner = dest / f".{version}.{host}.bundle"
                shutil.rmtree(inner, ignore_errors=True)
                os.replace(root, inner)
                shutil.rmtree(scratch)
                scratch = inner
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        try:
            os.symlink(scratch.name, target)  # the claim: exactly one pod wins
        except FileExistsError:
            shutil.rmtree(scratch, ignore_errors=True)
    marker = dest / f".seeded-{link}"
    seeded = marker.read_text().strip() if marker.is_file() else ""
    if not (dest / link).exists() or seeded != version:
        tmp = dest / f".{link}.{host}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(version, tmp)
        os.replace(tmp, dest / link)
        marker.write_text(version + "\n")
    return dest / link


def bundle_root(tree: Path) -> Path:
    found = sorted(p.parent for p in tree.rglob(BUNDLE_MANIFEST) if p.is_file())
    if len(found) != 1:
        raise FetchError(f"the archive must hold exactly one {BUNDLE_MANIFEST}, found {len(found)}")
    return found[0]


def extract(archive: Path, into: Path) -> None:
    """Unpack a tar / tar.gz holding only regular files and directories with relative paths."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            for m in members:
                path = PurePosixPath(m.name)
                if path.is_absolute() or ".." in path.parts:
                    raise FetchError(f"unsafe path in the archive: {m.name!r}")
                if not (m.isfile() or m.isdir()):
                    raise FetchError(f"the archive may hold only files and directories, not {m.name!r}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:  # Python < 3.10.12: the checks above are the filter
                tar.extractall(into, members=members)
    except tarfile.TarError as err:
        raise FetchError(f"not a tar archive: {err}") from err


# ----------------------------------------------------------------------------------- downloading


def _open(request: urllib.request.Request) -> IO[bytes]:
    # http(s) only: download() checks the scheme, the registry URLs are built here.
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def download(url: str, to: Path, sha256: str, headers: dict[str, str] | None = None) -> None:
    """Stream ``url`` into ``to``; raise FetchError (and remove it) unless its sha256 matches."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"only http(s) URLs are fetched, not {url!r}")
    digest = hashlib.sha256()
    try:
        with _open(urllib.request.Request(url, headers=headers or {})) as resp, to.open("wb") as out:
            while block := resp.read(CHUNK):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError) as err:
        to.unlink(missing_ok=True)
        raise FetchError(f"cannot download {_redact(url)}: {err}") from err
    if digest.hexdigest() != sha256.lower():
        to.unlink(missing_ok=True)
        raise FetchError(f"sha256 of {_redact(url)} is {digest.hexdigest()}, expected {sha256.lower()}")


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.hostname or "", query="").geturl()


def fetch_url(dest: Path, link: str, url: str, sha256: str) -> Path:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise FetchError("--sha256 must be 64 hex digits")

    def fill(scratch: Path) -> None:
        archive = scratch / ".download"
        download(url, archive, sha256)
        extract(archive, scratch)
        archive.unlink()

    return seed(dest, link, f"url-{sha256.lower()[:16]}", fill)


# -------------------------------------------------------------------------------------------- OCI


class Registry:
    """The few calls of the OCI distribution API a pull needs (manifest, blob), with auth challenges."""

    def __init__(self, registry: str, repo: str, *, plain_http: bool = False, auth_file: Path | None = None):
        self.base = f"{'http' if plain_http else 'https'}://{registry}/v2/{repo}"
        self.registry = registry
        self.repo = repo
        self.basic = _basic_auth(registry, auth_file)
        self.token: str | None = None

    def _request(self, path: str, accept: str | None = None) -> IO[bytes]:
        """An open response for ``path``; a 401 with a Bearer challenge is answered once with a token."""
        headers = {"Accept": accept} if accept else {}
        for attempt in range(2):
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            elif self.basic:
                headers["Authorization"] = f"Basic {self.basic}"
            try:
                return _open(urllib.request.Request(self.base + path, headers=headers))
            except urllib.error.HTTPError as err:
                challenge = err.headers.get("WWW-Authenticate", "")
                if err.code != 401 or attempt or not challenge.lower().startswith("bearer"):
                    raise FetchError(f"registry {self.registry} answered {err.code} for {self.repo}{path}") from err
                self.token = self._bearer_token(challenge)
            except (urllib.error.URLError, OSError) as err:
                raise FetchError(f"cannot reach registry {self.registry}: {err}") from err
        raise AssertionError("unreachable")

    def _bearer_token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            raise FetchError(f"registry {self.registry}: bearer challenge without a realm")
        query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        headers = {"Authorization": f"Basic {self.basic}"} if self.basic else {}
        realm = params["realm"]
        if urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise FetchError(f"registry {self.registry}: token realm is not http(s)")
        try:
            with _open(urllib.request.Request(f"{realm}?{query}" if query else realm, headers=headers)) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise FetchError(f"registry {self.registry}: cannot get a token: {err}") from err
        token = body.get("token") or body.get("access_token")
        if not token:
            raise FetchError(f"registry {self.registry}: the token endpoint returned no token")
        return str(token)

    def manifest(self, ref: str) -> tuple[dict[str, Any], str]:
        """The manifest of a tag or digest, and its digest (checked when ``ref`` is a digest)."""
        with self._request(f"/manifests/{ref}", accept=", ".join(OCI_MANIFEST_TYPES)) as resp:
            raw = resp.read()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise FetchError(f"manifest digest {digest} does not match the reference {ref}")
        manifest = json.loads(raw)
        if manifest.get("mediaType") not in (*OCI_MANIFEST_TYPES, None) or "layers" not in manifest:
            raise FetchError(f"{self.repo}@{ref} is not an image/artifact manifest (an index? push one platform)")
        return manifest, digest

    def blob(self, digest: str, to: Path) -> None:
        algo, _, want = digest.partition(":")
        if algo != "sha256":
            raise FetchError(f"unsupported digest {digest}")
        h = hashlib.sha256()
        with self._request(f"/blobs/{digest}") as resp, to.open("wb") as out:
            while block := resp.read(CHUNK):
                h.update(block)
                out.write(block)
        if h.hexdigest() != want:
            to.unlink(missing_ok=True)
            raise FetchError(f"blob {digest} arrived with sha256 {h.hexdigest()}")


def _basic_auth(registry: str, auth_file: Path | None) -> str | None:
    """base64(user:password) for ``registry`` from a docker config.json (``auths``), if there is one."""
    if auth_file is None:
        return None
    try:
        auths = json.loads(auth_file.read_text()).get("auths", {})
    except (OSError, ValueError) as err:
        raise FetchError(f"cannot read registry credentials {auth_file}: {err}") from err
    for key in (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v2/"):
        entry = auths.get(key)
        if entry:
            if entry.get("auth"):
                return str(entry["auth"])
            if "username" in entry:
                return base64.b64encode(f"{entry['username']}:{entry.get('password', '')}".encode()).decode()
    return None


def bundle_layer(manifest: dict[str, Any]) -> dict[str, Any]:
    layers = manifest["layers"]
    if len(layers) == 1:
        return dict(layers[0])
    tars = [layer for layer in layers if "tar" in str(layer.get("mediaType", ""))]
    if len(tars) != 1:
        raise FetchError(f"the artifact has {len(layers)} layers and {len(tars)} tar layers; push the bundle as one")
    return dict(tars[0])


def fetch_oci(dest: Path, link: str, reference: str, *, plain_http: bool = False,
              auth_file: Path | None = None) -> Path:
    m = REFERENCE.match(reference.removeprefix("oci://"))
    if m is None:
        raise FetchError(f"not an OCI reference (registry/repository:tag or @sha256:...): {reference!r}")
    registry = Registry(m["registry"], m["repo"], plain_http=plain_http, auth_file=auth_file)
    manifest, digest = registry.manifest(m["digest"] or m["tag"])

    def fill(scratch: Path) -> None:
        archive = scratch / ".layer"
        registry.blob(bundle_layer(manifest)["digest"], archive)
        extract(archive, scratch)
        archive.unlink()

    return seed(dest, link, f"oci-{digest.removeprefix('sha256:')[:16]}", fill)


# -------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The command line the chart's init container runs (tests parse the rendered one with it)."""
    parser = argparse.ArgumentParser(prog="python -m bundle.fetch", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="the bundle volume (bundle.mountPath)")
    parser.add_argument("--link", default="current", help="the symlink the service serves (bundle.path)")
    sub = parser.add_subparsers(dest="source", required=True)
    url = sub.add_parser("url", help="an HTTP(S) .tar.gz of the bundle directory")
    url.add_argument("url")
    url.add_argument("--sha256", required=True)
    oci = sub.add_parser("oci", help="an OCI artifact holding the bundle as one tar(+gzip) layer")
    oci.add_argument("reference")
    oci.add_argument("--auth-file", type=Path, help="docker config.json with registry credentials")
    oci.add_argument("--plain-http", action="store_true", help="talk plain HTTP to the registry")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    try:
        if args.source == "url":
            served = fetch_url(args.dest, args.link, args.url, args.sha256)
        else:
            served = fetch_oci(args.dest, args.link, args.reference, plain_http=args.plain_http,
                               auth_file=args.auth_file)
    except BundleError as err:
        print(f"bundle fetch failed: {err}", file=sys.stderr)
        return 1
    print(f"bundle {os.readlink(served)} available; {served} -> {os.readlink(served)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
