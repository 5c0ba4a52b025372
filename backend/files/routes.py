"""HTTP routes for uploads: `/api/files`. Handlers parse input, call the service and return."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Controller, Request, Response, Router, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT, HTTP_413_REQUEST_ENTITY_TOO_LARGE
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.auth import User
from backend.errors import InvalidInputError, UnsupportedMediaTypeError
from backend.files import service as file_service
from backend.files.models import FilePublic
from backend.files.sniff import IMAGE_TYPES
from backend.files.storage import FileStorage
from backend.settings import Settings

# Room for the multipart boundary and part headers around the file itself.
FORM_OVERHEAD_BYTES = 16 * 1024
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"


def provide_storage(request: Request[Any, Any, Any]) -> FileStorage:
    """The storage backend created by `files_lifespan`."""
    storage: FileStorage = request.app.state.file_storage
    return storage


def public(stored: file_service.StoredFile) -> FilePublic:
    """The API shape of a file."""
    return FilePublic(
        id=stored.id, name=stored.name, content_type=stored.content_type, size=stored.size, created_at=stored.created_at
    )


def content_disposition(name: str, inline: bool) -> str:
    """`inline`/`attachment` with an ASCII fallback name and the exact name in RFC 5987 `filename*`."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def read_upload(request: Request[Any, Any, Any], max_bytes: int) -> tuple[str | None, bytes]:
    """Read the one `file` part of a multipart body, refusing oversize bodies as early as possible.

    A `Content-Length` over the limit is refused before anything is read; otherwise Litestar counts bytes while
    reading and stops at the route's `request_max_body_size` (the file limit plus form overhead).

    Returns:
        The client's filename and the bytes.

    Raises:
        PayloadTooLargeError: `file_too_large`.
        UnsupportedMediaTypeError: Not a multipart body (415, as every body route answers a wrong media type).
        InvalidInputError: Not exactly one file in the field `file`.
    """
    if (request.content_length or 0) > max_bytes + FORM_OVERHEAD_BYTES:
        raise file_service.too_large(max_bytes)
    if request.content_type[0] != "multipart/form-data":
        raise UnsupportedMediaTypeError(
            "Send the body as multipart/form-data (Content-Type: multipart/form-data), one file in the field 'file'."
        )
    try:
        form = await request.form()
    except HTTPException as error:
        if error.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
            raise file_service.too_large(max_bytes) from None
        raise
    uploads = [value for value in form.getall("file", []) if isinstance(value, UploadFile)]
    if len(uploads) != 1:
        raise InvalidInputError("file: send exactly one file in the multipart field 'file'.")
    upload = uploads[0]
    try:
        return upload.filename, await upload.read()
    finally:
        await upload.close()


class FileController(Controller):
    """`/api/files`: upload, read and delete the caller's files."""

    path = "/"
    tags = ["files"]
    dependencies = {"file_storage": Provide(provide_storage, sync_to_thread=False)}

    @post("/", operation_id="UploadFile", status_code=HTTP_201_CREATED)
    async def upload(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        file_storage: NamedDependency[FileStorage],
        file_id: Annotated[
            uuid.UUID | None,
            QueryParameter(
                name="id",
                description="Store the file under this id (the second phase of a ChatKit two-phase upload, whose "
                "`attachments.create` names it); 409 if a file has it already.",
            ),
        ] = None,
    ) -> FilePublic:
        """Upload one file (multipart field `file`)."""
        settings: Settings = request.app.state.settings
        filename, data = await read_upload(request, settings.file_max_bytes)
        stored = await file_service.upload_file(
            db_session, file_storage, settings, user.id, filename, data, file_id=file_id
        )
        return public(stored)

    @get("/{file_id:uuid}", operation_id="GetFile")
    async def get_file(
        self, db_session: NamedDependency[AsyncSession], user: NamedDependency[User], file_id: FromPath[uuid.UUID]
    ) -> FilePublic:
        """Read one file's metadata."""
        return public(await file_service.get_file(db_session, user.id, file_id))

    @get("/{file_id:uuid}/content", operation_id="GetFileContent", media_type="application/octet-stream")
    async def get_content(
        self,
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        file_storage: NamedDependency[FileStorage],
        file_id: FromPath[uuid.UUID],
    ) -> Response[bytes]:
        """The file's bytes, with headers that stop a browser from running or sniffing them."""
        stored, data = await file_service.read_file(db_session, file_storage, user.id, file_id)
        # Litestar appends `; charset=utf-8` to text/* types itself.
        return Response(
            data,
            media_type=stored.content_type,
            headers={
                "Content-Disposition": content_disposition(stored.name, stored.content_type in IMAGE_TYPES),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "Cache-Control": "private, no-cache",
            },
        )

    @delete("/{file_id:uuid}", operation_id="DeleteFile", status_code=HTTP_204_NO_CONTENT)
    async def delete_file(
        self,
        db_session: NamedDependency[AsyncSession],
        user: NamedDependency[User],
        file_storage: NamedDependency[FileStorage],
        file_id: FromPath[uuid.UUID],
    ) -> None:
        """Delete a file; messages that had it attached lose the attachment."""
        await file_service.delete_file(db_session, file_storage, user.id, file_id)


def files_router(settings: Settings) -> Router:
    """Mount `FileController` at `/api/files` with a body limit just above `FILE_MAX_BYTES` for this route only.

    Args:
        settings: Application settings.

    Returns:
        The router to add to the app's route handlers.
    """
    return Router(
        path="/api/files",
        route_handlers=[FileController],
        request_max_body_size=settings.file_max_bytes + FORM_OVERHEAD_BYTES,
    )
