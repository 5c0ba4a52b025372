"""`/api/files`: upload, metadata, content headers, delete, every limit and refusal, cross-user 404s, atomicity."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.app import create_app
from backend.db import Database
from backend.files.models import File, FileBlob
from backend.files.sniff import sanitize_filename
from backend.files.storage import DatabaseStorage, LocalStorage
from backend.settings import Settings, load_settings
from tests import files_samples as samples
from tests.conftest import bearer, make_token, serve
from tests.seeding import client_for, count_rows, loopback_client

STORAGES = ["local", "database"]


def upload_body(data: bytes, name: str = "a.png", content_type: str = "application/octet-stream") -> dict:
    """httpx `files=` for one part named `file`."""
    return {"file": (name, data, content_type)}


@pytest.fixture(params=STORAGES)
async def files_client(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A local-mode client on each storage backend."""
    async with client_for(make_settings(file_storage=request.param)) as client:
        yield client


def stored_paths(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_upload_read_content_and_delete(files_client: AsyncTestClient[Litestar], settings: Settings) -> None:
    image = samples.png()
    response = await files_client.post("/api/files", files=upload_body(image, "photo.png", "text/html"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "name", "content_type", "size", "created_at"}
    assert (body["name"], body["content_type"], body["size"]) == ("photo.png", "image/png", len(image))

    meta = await files_client.get(f"/api/files/{body['id']}")
    assert meta.status_code == 200 and meta.json() == body

    content = await files_client.get(f"/api/files/{body['id']}/content")
    assert content.status_code == 200
    assert content.content == image
    assert content.headers["content-type"] == "image/png"
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert content.headers["content-disposition"] == "inline; filename=\"photo.png\"; filename*=UTF-8''photo.png"

    deleted = await files_client.delete(f"/api/files/{body['id']}")
    assert deleted.status_code == 204
    for path in (f"/api/files/{body['id']}", f"/api/files/{body['id']}/content"):
        missing = await files_client.get(path)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await files_client.delete(f"/api/files/{body['id']}")).status_code == 404
    assert stored_paths(settings.file_storage_dir) == []


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (samples.png(), "x.txt", "image/png"),
        (samples.JPEG, "x.jpg", "image/jpeg"),
        (samples.GIF, "x", "image/gif"),
        (samples.WEBP, "x.webp", "image/webp"),
        (samples.PDF, "report.png", "application/pdf"),
        (samples.TEXT, "notes.txt", "text/plain"),
        (samples.TEXT, "notes", "text/plain"),
        (samples.MARKDOWN, "README.MD", "text/markdown"),
        (samples.MARKDOWN, "readme.markdown", "text/markdown"),
        (samples.CSV, "table.csv", "text/csv"),
        (samples.CSV, "table.dat", "text/plain"),
    ],
)
async def test_type_comes_from_the_bytes(client: AsyncTestClient[Litestar], data: bytes, name: str, expected: str):
    response = await client.post("/api/files", files=upload_body(data, name, "image/svg+xml"))
    assert response.status_code == 201, response.text
    assert response.json()["content_type"] == expected


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (samples.SVG, "a.svg"),
        (samples.XML_SVG, "a.txt"),
        (samples.HTML, "page.txt"),
        (b"<script>alert(1)</script>", "a.md"),
        (samples.ZIP, "a.csv"),
        (samples.LATIN1, "a.txt"),
        (samples.NUL_TEXT, "a.txt"),
        (b"\x89PNX not quite", "a.png"),
    ],
)
async def test_other_types_are_refused_with_415(
    client: AsyncTestClient[Litestar], db: Database, data: bytes, name: str
):
    response = await client.post("/api/files", files=upload_body(data, name, "text/plain"))
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_file_type"
    assert await count_rows(db, File) == 0


async def test_text_is_served_as_an_attachment_with_utf8_and_an_encoded_name(client: AsyncTestClient[Litestar]):
    response = await client.post("/api/files", files=upload_body(samples.TEXT, 'résumé "q".txt'))
    file_id = response.json()["id"]
    content = await client.get(f"/api/files/{file_id}/content")
    assert content.headers["content-type"] == "text/plain; charset=utf-8"
    assert content.headers["content-disposition"] == (
        "attachment; filename=\"r_sum_ _q_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22q%22.txt"
    )
    assert content.headers["content-security-policy"] == "default-src 'none'; sandbox"
    pdf = await client.post("/api/files", files=upload_body(samples.PDF, "a.pdf"))
    pdf_content = await client.get(f"/api/files/{pdf.json()['id']}/content")
    assert pdf_content.headers["content-type"] == "application/pdf"
    assert pdf_content.headers["content-disposition"].startswith("attachment;")


async def test_filenames_are_sanitised_and_never_used_as_paths(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(file_storage="local")
    async with client_for(settings) as client:
        response = await client.post(
            "/api/files", files=upload_body(samples.TEXT, "..\\..\\evil/../../etc/pa ss\u202ewd.txt")
        )
        assert response.status_code == 201
    body = response.json()
    assert body["name"] == "pa ss wd.txt"
    (path,) = stored_paths(settings.file_storage_dir)
    assert path.relative_to(settings.file_storage_dir).parts == (
        uuid.UUID(body["id"]).hex[:2],
        uuid.UUID(body["id"]).hex,
    )


async def test_size_limit_is_413_file_too_large(make_settings: Callable[..., Settings], db: Database) -> None:
    async with client_for(make_settings(file_max_bytes=1024)) as client:
        exact = await client.post("/api/files", files=upload_body(b"a" * 1024, "a.txt"))
        assert exact.status_code == 201
        over = await client.post("/api/files", files=upload_body(b"a" * 1025, "a.txt"))
        assert over.status_code == 413 and over.json()["error"]["code"] == "file_too_large"
        body_over = await client.post("/api/files", files=upload_body(b"a" * 40_000, "a.txt"))
        assert body_over.status_code == 413 and body_over.json()["error"]["code"] == "file_too_large"
    assert await count_rows(db, File) == 1


async def test_an_announced_oversize_body_is_refused_before_it_is_sent(make_settings: Callable[..., Settings]) -> None:
    """Real uvicorn: only the headers go out; the 413 comes back without the server waiting for a body."""
    app = create_app(make_settings(file_max_bytes=1024))
    async with serve(app) as base:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /api/files HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()


async def test_a_chunked_oversize_body_is_cut_off_while_reading(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(file_max_bytes=1024))

    async def body() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        for _ in range(1000):
            yield b"a" * 1024

    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        try:
            response = await http.post(
                "/api/files", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
            )
        except httpx.HTTPError:
            pytest.fail("the server should answer 413, not drop the connection")
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"


async def test_quota(make_settings: Callable[..., Settings]) -> None:
    async with client_for(make_settings(file_quota_bytes=2000)) as client:
        first = await client.post("/api/files", files=upload_body(b"a" * 1500, "a.txt"))
        assert first.status_code == 201
        refused = await client.post("/api/files", files=upload_body(b"b" * 501, "b.txt"))
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "quota_exceeded"
        fits = await client.post("/api/files", files=upload_body(b"b" * 500, "b.txt"))
        assert fits.status_code == 201
        await client.delete(f"/api/files/{first.json()['id']}")
        again = await client.post("/api/files", files=upload_body(b"c" * 1500, "c.txt"))
        assert again.status_code == 201


@pytest.mark.parametrize("storage", STORAGES)
async def test_the_quota_holds_under_concurrent_uploads(
    make_settings: Callable[..., Settings], db: Database, storage: str
) -> None:
    """Issue 18 §4: 20 uploads of 300 KB at once against a 1 MB quota stored 2.1 MB on PostgreSQL."""
    quota, size = 1_000_000, 300_000
    settings = make_settings(file_quota_bytes=quota, file_storage=storage, file_max_bytes=size)
    async with client_for(settings) as client:
        responses = await asyncio.gather(
            *(client.post("/api/files", files=upload_body(bytes([97 + i % 26]) * size, f"{i}.txt")) for i in range(20))
        )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * (quota // size) + [413] * (20 - quota // size), [r.text for r in responses]
    async with db.sessions() as session:
        sizes = (await session.exec(select(File.size))).all()
    assert sum(sizes) <= quota and len(sizes) == quota // size


async def test_the_quota_is_per_user(make_settings: Callable[..., Settings]) -> None:
    async with client_for(make_settings(file_quota_bytes=1000, auth_secret="s" * 32)) as client:

        def as_user(sub: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {make_token(sub, secret='s' * 32)}"}

        assert (
            await client.post("/api/files", files=upload_body(b"a" * 900, "a.txt"), headers=as_user("a"))
        ).status_code == 201
        assert (
            await client.post("/api/files", files=upload_body(b"a" * 900, "a.txt"), headers=as_user("b"))
        ).status_code == 201
        assert (
            await client.post("/api/files", files=upload_body(b"a" * 200, "a.txt"), headers=as_user("a"))
        ).status_code == 413


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"files": {"other": ("a.txt", b"hi", "text/plain")}}, "validation_error"),
        (
            {"files": [("file", ("a.txt", b"hi", "text/plain")), ("file", ("b.txt", b"yo", "text/plain"))]},
            "validation_error",
        ),
        ({"files": {"file": ("a.txt", b"", "text/plain")}}, "empty_file"),
    ],
)
async def test_malformed_uploads_are_422(client: AsyncTestClient[Litestar], kwargs: dict, code: str) -> None:
    response = await client.post("/api/files", **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "kwargs",
    [{"json": {"file": "aGk="}}, {"content": b"hi", "headers": {"Content-Type": "text/plain"}}, {"content": b"hi"}],
)
async def test_a_body_that_is_not_multipart_is_415(client: AsyncTestClient[Litestar], kwargs: dict) -> None:
    """As on every body route (README: "uploads need multipart/form-data"), a wrong media type is 415."""
    response = await client.post("/api/files", **kwargs)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_another_users_file_is_404_everywhere(auth_client: AsyncTestClient[Litestar], db: Database) -> None:
    response = await auth_client.post("/api/files", files=upload_body(samples.png()), headers=bearer("alice"))
    file_id = response.json()["id"]
    for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
        other = await auth_client.request(method, f"/api/files/{file_id}{path}", headers=bearer("bob"))
        assert other.status_code == 404, (method, path)
        assert other.json()["error"]["code"] == "not_found"
    assert (await auth_client.get(f"/api/files/{file_id}", headers=bearer("alice"))).status_code == 200
    assert (await auth_client.get(f"/api/files/{uuid.uuid4()}", headers=bearer("alice"))).status_code == 404
    assert (await auth_client.post("/api/files", files=upload_body(samples.png()))).status_code == 401


class FailingLocalStorage(LocalStorage):
    """Writes the whole file to its final place, then fails (as if the disk or the process gave out)."""

    async def write(self, session: AsyncSession, file_id: uuid.UUID, data: bytes) -> None:
        await super().write(session, file_id, data)
        raise OSError("disk gave out")


class FailingDatabaseStorage(DatabaseStorage):
    """Inserts the blob row, then fails before the commit."""

    async def write(self, session: AsyncSession, file_id: uuid.UUID, data: bytes) -> None:
        await super().write(session, file_id, data)
        raise OSError("connection gave out")


@pytest.mark.parametrize("storage_name", STORAGES)
async def test_a_failure_mid_upload_leaves_no_row_and_no_bytes(
    make_settings: Callable[..., Settings], db: Database, storage_name: str
) -> None:
    settings = make_settings(file_storage=storage_name)
    failing = FailingLocalStorage(settings.file_storage_dir) if storage_name == "local" else FailingDatabaseStorage()
    app = create_app(settings)
    async with loopback_client(app) as client:
        app.state.file_storage = failing
        response = await client.post("/api/files", files=upload_body(samples.png()))
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal"
    assert await count_rows(db, File) == 0
    assert await count_rows(db, FileBlob) == 0
    assert stored_paths(settings.file_storage_dir) == []


async def test_local_write_failing_before_the_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    file_id = uuid.uuid4()
    storage.path_for(file_id).mkdir(parents=True)  # the rename onto a directory fails after the bytes are written
    with pytest.raises(OSError):
        await storage.write(None, file_id, b"data")  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.rglob("*")] == [file_id.hex[:2], file_id.hex]


async def test_database_storage_keeps_bytes_in_file_blobs(
    make_settings: Callable[..., Settings], db: Database, tmp_path: Path
):
    settings = make_settings(file_storage="database")
    async with client_for(settings) as client:
        response = await client.post("/api/files", files=upload_body(samples.PDF, "a.pdf"))
        file_id = response.json()["id"]
        assert (await client.get(f"/api/files/{file_id}/content")).content == samples.PDF
    assert await count_rows(db, FileBlob) == 1
    assert stored_paths(settings.file_storage_dir) == []
    async with client_for(settings) as client:
        await client.delete(f"/api/files/{file_id}")
    assert await count_rows(db, FileBlob) == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("C:\\Users\\me\\photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("a\x00b\x07c\r\nd.txt", "a b c d.txt"),
        ("\u202egnp.exe", "gnp.exe"),
        ("  ..hidden.  ", "hidden"),
        ("", "file"),
        (None, "file"),
        ("/", "file"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
        ("y" * 300, "y" * 200),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw) == expected


async def test_a_row_whose_bytes_are_gone_answers_404(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(file_storage="local")
    async with client_for(settings) as client:
        file_id = (await client.post("/api/files", files=upload_body(samples.TEXT, "a.txt"))).json()["id"]
        LocalStorage(settings.file_storage_dir).path_for(uuid.UUID(file_id)).unlink()
        response = await client.get(f"/api/files/{file_id}/content")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert (await client.get(f"/api/files/{file_id}")).status_code == 200


def test_storage_defaults_to_local_on_sqlite_and_database_elsewhere() -> None:
    sqlite, postgres = "sqlite+aiosqlite:///x.db", "postgresql://u@h/db"
    assert load_settings(database_url=sqlite).file_storage_backend == "local"
    assert load_settings(database_url=postgres).file_storage_backend == "database"
    assert load_settings(database_url=postgres, file_storage="local").file_storage_backend == "local"
    assert load_settings(database_url=sqlite, file_storage="database").file_storage_backend == "database"


async def test_a_client_that_leaves_mid_upload_is_logged_at_info_without_a_traceback(
    make_settings: Callable[..., Settings],
) -> None:
    """The client's abort is not a server error: no ERROR line and no traceback, one INFO line instead."""
    from tests.platform.test_http_guard import captured_logs

    async with serve(create_app(make_settings(log_level="INFO"))) as base:
        port = int(base.rsplit(":", 1)[1])
        with captured_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + b"x" * 4096
            writer.write(
                b"POST /api/files HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() + b"\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 400000\r\n\r\n" + part
            )
            await writer.drain()
            await asyncio.sleep(0.5)  # the handler is now reading the body
            writer.transport.abort()
            for _ in range(100):
                if any("client" in r.getMessage() and "abort" in r.getMessage() for r in logs.records):
                    break
                await asyncio.sleep(0.05)
            await reader.read()
    assert [r.getMessage() for r in logs.records if r.levelno >= logging.ERROR] == []
    aborts = [r for r in logs.records if "abort" in r.getMessage()]
    assert len(aborts) == 1 and aborts[0].levelno == logging.INFO and aborts[0].exc_info is None
