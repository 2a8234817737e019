"""bundle.fetch, the init container for bundle.source url/oci, against real HTTP servers on loopback:
a file server for .tar.gz URLs and a small OCI registry (manifests, blobs, a Bearer token challenge).

Digest checks before unpacking, the bundle's own checksums, unsafe archives, seeding once per version,
not rolling back a version the sidecar published, several pods seeding one volume at once."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bundle.errors import BundleError
from bundle.fetch import FetchError, extract, fetch_oci, fetch_url, main
from bundle.manifest import write_manifest

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def make_bundle(root: Path, version: str = "1") -> Path:
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"onnx-bytes-" + version.encode())
    write_manifest(root, {"name": "tiny", "version": version, "tasks": {}, "window": {},
                          "variants": {"fp32": "model.onnx"}, "parity": {}})
    return root


def tar_gz(src: Path, top: str | None = "bundle") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=top or ".")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """Serves ``routes`` (path -> (status, headers, body)); records the requests it saw."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.token: str | None = None  # when set, /v2/ paths need `Authorization: Bearer <token>`
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                outer.seen.append((self.path, self.headers.get("Authorization")))
                authorized = self.headers.get("Authorization") == f"Bearer {outer.token}"
                if path.startswith("/v2/") and outer.token and not authorized:
                    realm = f"http://127.0.0.1:{outer.port}/token"
                    challenge = f'Bearer realm="{realm}",service="test",scope="repository:x:pull"'
                    self._send(401, {"WWW-Authenticate": challenge}, b"")
                    return
                if path == "/token":
                    self._send(200, {"Content-Type": "application/json"}, json.dumps({"token": outer.token}).encode())
                    return
                status, headers, body = outer.routes.get(path, (404, {}, b"not found"))
                self._send(status, headers, body)

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, repo: str, tag: str, layer: bytes, media_type: str = LAYER_TYPE) -> str:
        """An OCI artifact with one layer (what `oras push` makes); returns the manifest digest."""
        config = b"{}"
        self.routes[f"/v2/{repo}/blobs/sha256:{sha(config)}"] = (200, {}, config)
        self.routes[f"/v2/{repo}/blobs/sha256:{sha(layer)}"] = (200, {}, layer)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.turnwise.bundle.v1",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": f"sha256:{sha(config)}",
                       "size": len(config)},
            "layers": [{"mediaType": media_type, "digest": f"sha256:{sha(layer)}", "size": len(layer),
                        "annotations": {"org.opencontainers.image.title": "bundle.tar.gz"}}],
        }).encode()
        digest = f"sha256:{sha(manifest)}"
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        self.routes[f"/v2/{repo}/manifests/{tag}"] = (200, headers, manifest)
        self.routes[f"/v2/{repo}/manifests/{digest}"] = (200, headers, manifest)
        return digest


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def archive(tmp_path: Path) -> bytes:
    return tar_gz(make_bundle(tmp_path / "src" / "bundle"))


def served(dest: Path) -> str:
    return os.readlink(dest / "current")


# --------------------------------------------------------------------------------------------- url


def test_url_seeds_a_verified_bundle_once(server: Server, archive: bytes, tmp_path: Path) -> None:
    server.routes["/b.tar.gz"] = (200, {}, archive)
    dest = tmp_path / "models"
    dest.mkdir()
    link = fetch_url(dest, "current", f"{server.url}/b.tar.gz", sha(archive))
    version = f"url-{sha(archive)[:16]}"
    assert served(dest) == version
    assert sorted(p.name for p in link.iterdir()) == ["SHA256SUMS", "bundle.json", "model.onnx"]  # the top dir
    assert (dest / ".seeded-current").read_text().strip() == version
    hits = len(server.seen)
    fetch_url(dest, "current", f"{server.url}/b.tar.gz", sha(archive))  # a restarted pod
    assert len(server.seen) == hits, "an already seeded version is not downloaded again"
    assert not [p for p in dest.iterdir() if p.name.endswith((".tmp", ".download"))]


def test_url_with_a_wrong_sha256_is_refused_before_unpacking(server: Server, archive: bytes, tmp_path: Path) -> None:
    server.routes["/b.tar.gz"] = (200, {}, archive)
    dest = tmp_path / "models"
    dest.mkdir()
    with pytest.raises(FetchError, match=r"sha256 of .* expected"):
        fetch_url(dest, "current", f"{server.url}/b.tar.gz", "0" * 64)
    assert list(dest.iterdir()) == []  # nothing left behind, nothing served


def test_url_errors_say_what_failed(server: Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="cannot download"):
        fetch_url(tmp_path, "current", f"{server.url}/missing.tar.gz", "0" * 64)
    with pytest.raises(FetchError, match="only http"):
        fetch_url(tmp_path, "current", "file:///etc/passwd", "0" * 64)
    with pytest.raises(FetchError, match="64 hex"):
        fetch_url(tmp_path, "current", f"{server.url}/x", "abc")


def test_a_tampered_bundle_fails_its_own_checksums(server: Server, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "src" / "bundle")
    (src / "model.onnx").write_bytes(b"changed after export")
    data = tar_gz(src)
    server.routes["/b.tar.gz"] = (200, {}, data)
    dest = tmp_path / "models"
    dest.mkdir()
    with pytest.raises(BundleError, match=r"sha256 of .model\.onnx."):  # ChecksumError (a BundleError)
        fetch_url(dest, "current", f"{server.url}/b.tar.gz", sha(data))
    assert not (dest / "current").exists()


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "two-bundles", "no-bundle"])
def test_unsafe_or_wrong_archives_are_refused(kind: str, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, data: bytes = b"x", type_: bytes = tarfile.REGTYPE, linkname: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.size, info.type, info.linkname = (len(data) if type_ == tarfile.REGTYPE else 0), type_, linkname
            tar.addfile(info, io.BytesIO(data) if type_ == tarfile.REGTYPE else None)
        if kind == "traversal":
            add("../evil")
        elif kind == "absolute":
            add("/etc/evil")
        elif kind == "symlink":
            add("bundle/link", type_=tarfile.SYMTYPE, linkname="/etc/passwd")
        elif kind == "two-bundles":
            add("a/bundle.json", b"{}")
            add("b/bundle.json", b"{}")
        else:
            add("readme.txt")
    path = tmp_path / "a.tar.gz"
    path.write_bytes(buf.getvalue())
    dest = tmp_path / "models"
    dest.mkdir()
    server_less = tmp_path / "out"
    server_less.mkdir()
    if kind in ("two-bundles", "no-bundle"):
        from bundle.fetch import bundle_root

        extract(path, server_less)
        with pytest.raises(FetchError, match=r"exactly one bundle\.json"):
            bundle_root(server_less)
    else:
        with pytest.raises(FetchError, match=r"unsafe path|only files and directories"):
            extract(path, server_less)
        assert not (tmp_path / "evil").exists()


def test_keeps_a_version_the_sidecar_published_and_takes_a_new_url_once(
        server: Server, archive: bytes, tmp_path: Path) -> None:
    server.routes["/v1.tar.gz"] = (200, {}, archive)
    dest = tmp_path / "models"
    dest.mkdir()
    fetch_url(dest, "current", f"{server.url}/v1.tar.gz", sha(archive))
    published = make_bundle(dest / "v-20260101", version="2")
    os.symlink(published.name, dest / "current.tmp")
    os.replace(dest / "current.tmp", dest / "current")  # the sidecar's atomic publish
    fetch_url(dest, "current", f"{server.url}/v1.tar.gz", sha(archive))  # a pod restart
    assert served(dest) == "v-20260101"
    v2 = tar_gz(make_bundle(tmp_path / "src2" / "bundle", version="3"))
    server.routes["/v2.tar.gz"] = (200, {}, v2)
    fetch_url(dest, "current", f"{server.url}/v2.tar.gz", sha(v2))  # an operator ships a new bundle
    assert served(dest) == f"url-{sha(v2)[:16]}"


def test_concurrent_pods_on_one_volume(server: Server, archive: bytes, tmp_path: Path) -> None:
    server.routes["/b.tar.gz"] = (200, {}, archive)
    dest = tmp_path / "models"
    dest.mkdir()
    from bundle.fetch import seed

    def pod(i: int) -> Path:
        def fill(scratch: Path) -> None:
            from bundle.fetch import download

            download(f"{server.url}/b.tar.gz", scratch / ".download", sha(archive))
            extract(scratch / ".download", scratch)
            (scratch / ".download").unlink()

        return seed(dest, "current", "url-x", fill, host=f"pod-{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pod, range(8)))
    assert served(dest) == "url-x"
    copies = [p for p in dest.iterdir() if p.name.startswith(".url-x.")]
    assert len(copies) == 1, f"losing pods must remove their copies: {copies}"
    assert sorted(p.name for p in (dest / "current").iterdir()) == ["SHA256SUMS", "bundle.json", "model.onnx"]


# --------------------------------------------------------------------------------------------- OCI


def test_oci_pull_with_a_bearer_challenge(server: Server, archive: bytes, tmp_path: Path) -> None:
    digest = server.push("team/turnwise-bundle", "v3", archive)
    server.token = "t0ken"
    dest = tmp_path / "models"
    dest.mkdir()
    fetch_oci(dest, "current", f"127.0.0.1:{server.port}/team/turnwise-bundle:v3", plain_http=True)
    assert served(dest) == f"oci-{digest.removeprefix('sha256:')[:16]}"
    assert sorted(p.name for p in (dest / "current").iterdir()) == ["SHA256SUMS", "bundle.json", "model.onnx"]
    assert any(path.startswith("/token?") and "scope=repository" in path for path, _ in server.seen)
    # by digest too, and the manifest digest is checked against it
    dest2 = tmp_path / "models2"
    dest2.mkdir()
    fetch_oci(dest2, "current", f"127.0.0.1:{server.port}/team/turnwise-bundle@{digest}", plain_http=True)
    assert served(dest2) == served(dest)


def test_oci_basic_credentials_from_a_docker_config(server: Server, archive: bytes, tmp_path: Path) -> None:
    server.push("private/bundle", "1", archive)
    auth = tmp_path / "config.json"
    registry = f"127.0.0.1:{server.port}"
    auth.write_text(json.dumps({"auths": {registry: {"auth": base64.b64encode(b"robot:pw").decode()}}}))
    dest = tmp_path / "models"
    dest.mkdir()
    assert main(["--dest", str(dest), "oci", f"{registry}/private/bundle:1", "--plain-http",
                 "--auth-file", str(auth)]) == 0
    assert any(header == f"Basic {base64.b64encode(b'robot:pw').decode()}" for _, header in server.seen)


def test_oci_blob_that_does_not_match_its_digest_is_refused(server: Server, archive: bytes, tmp_path: Path) -> None:
    server.push("team/b", "v1", archive)
    layer = f"/v2/team/b/blobs/sha256:{sha(archive)}"
    server.routes[layer] = (200, {}, archive[:-10] + b"0123456789")
    dest = tmp_path / "models"
    dest.mkdir()
    with pytest.raises(FetchError, match="arrived with sha256"):
        fetch_oci(dest, "current", f"127.0.0.1:{server.port}/team/b:v1", plain_http=True)
    assert not (dest / "current").exists()


def test_oci_errors_say_what_failed(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dest", str(tmp_path), "oci", f"127.0.0.1:{server.port}/no/such:tag", "--plain-http"]) == 1
    assert "answered 404" in capsys.readouterr().err
    with pytest.raises(FetchError, match="not an OCI reference"):
        fetch_oci(tmp_path, "current", "just-a-name")
