"""Make the generated OpenAPI document describe the API as it behaves.

Litestar documents every operation with its own 400 body (`{status_code, detail, extra}`) and nothing else. This
module rewrites the cached document once, after the app is built: every error is our `{"error": {code, message}}`
body, every operation lists the statuses it can answer, the bearer scheme is declared (JWT mode), and request fields
say what the server really accepts (trimmed text must not be blank, `null` only where it is accepted, the
`conversation_id` alias of `/chatkit`).
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

from backend.files.sniff import SERVED_TYPES
from backend.settings import Settings

ERROR_SCHEMA = "Error"
BEARER_SCHEME = "BearerToken"
NOT_BLANK = r"\S"
"""Text fields are trimmed before they are checked, so they must contain a non-space character."""

_DESCRIPTIONS = {
    "400": "The body is not valid JSON (`malformed_json`).",
    "401": "No valid bearer token (`unauthorized`, `token_expired`).",
    "404": "No such resource, or it belongs to someone else (`not_found`).",
    "409": "The conversation is busy (`run_in_progress`), the idempotency key was used for another message "
    "(`idempotency_conflict`), or the answers name nothing pending (`not_pending`, `nothing_pending`).",
    "413": "The body is larger than MAX_BODY_BYTES, or a file than FILE_MAX_BYTES or the quota "
    "(`payload_too_large`, `file_too_large`, `quota_exceeded`).",
    "415": "The body is not `application/json` (`unsupported_media_type`), or an upload's type is refused "
    "(`unsupported_file_type`).",
    "422": "A field or parameter is invalid; the message names it (`validation_error`).",
    "429": "A quota is used up (`quota_exceeded`) or a rate limit reached (`rate_limited`): the body names the limit, "
    "the usage and `reset_at`; `Retry-After` says when to retry.",
    "503": "The database is unreachable, too slow or locked (`database_unavailable`), or not migrated "
    "(`database_not_migrated`, `/ready` only).",
}
_METHODS = ("get", "put", "post", "delete", "patch")
UPLOAD_PATH = "/api/files"
CONTENT_PATH = "/api/files/{file_id}/content"


def _upload_body() -> RequestBody:
    """`POST /api/files` reads its multipart body itself (to stop at the size limit), so Litestar cannot see it."""
    form = Schema(
        type=OpenAPIType.OBJECT,
        required=["file"],
        properties={"file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)},
    )
    return RequestBody(content={"multipart/form-data": OpenAPIMediaType(schema=form)}, required=True)


def _error_schema() -> Schema:
    text = Schema(type=OpenAPIType.STRING, min_length=1)
    inner = Schema(
        type=OpenAPIType.OBJECT,
        required=["code", "message"],
        properties={
            "code": text,
            "message": text,
            "request_id": Schema(type=OpenAPIType.STRING, min_length=1, description="As in `X-Request-ID`."),
            # 429 only: which limit, its value, the usage counted against it, and when it resets.
            "limit_name": text,
            "limit": Schema(type=OpenAPIType.NUMBER),
            "usage": Schema(type=OpenAPIType.NUMBER),
            "reset_at": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
        },
        additional_properties=False,
    )
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["error"],
        properties={"error": inner},
        additional_properties=False,
        description="Every error answer: a stable machine-readable `code` and a sentence safe to show.",
    )


def _statuses(path: str, method: str, operation: Operation, *, bearer: bool) -> list[str]:
    """The error statuses one operation can answer, from its path, method, parameters and body."""
    public = operation.security == [{}]
    statuses: set[str] = set()
    if bearer and not public:
        statuses.add("401")
    if operation.request_body is not None or (path, method) == (UPLOAD_PATH, "post"):
        statuses |= {"400", "413", "415", "422"}
    if operation.parameters:
        statuses.add("422")
    if "{" in path or path == "/chatkit":
        statuses.add("404")
    if path == "/chatkit":
        statuses |= {"409", "429"}
    if not public or path == "/ready":
        statuses.add("503")
    return sorted(statuses)


def _refine_request_schemas(schemas: dict[str, Schema], settings: Settings) -> None:
    """Make request schemas match the validation the server really does."""
    chat_message = (schemas["ChatRequest"].properties or {}).get("message") if "ChatRequest" in schemas else None
    if isinstance(chat_message, Schema):
        chat_message.max_length = settings.max_message_chars  # MAX_MESSAGE_CHARS, checked after trimming
    for name, fields in {
        "TaskCreate": ("title", "notes"),
        "TaskUpdate": ("title", "notes"),
        "ConversationUpdate": ("title",),
        "ChatRequest": ("message",),
    }.items():
        model = schemas.get(name)
        for field in fields:
            prop = (model.properties or {}).get(field) if model else None
            if isinstance(prop, Schema):
                _trimmed_text(prop, required=field != "notes")
    update = schemas.get("TaskUpdate")
    if update and update.properties:
        # The server rejects `null` for these ("may be omitted but not null"): document them as non-nullable.
        for field in ("title", "completed"):
            prop = update.properties.get(field)
            if isinstance(prop, Schema) and prop.one_of:
                (kept,) = [o for o in prop.one_of if isinstance(o, Schema) and o.type != OpenAPIType.NULL]
                assert isinstance(kept, Schema)
                prop.one_of = None
                prop.type = kept.type
                prop.pattern = kept.pattern
    chat = schemas.get("ChatRequest")
    if chat and chat.properties:
        thread = chat.properties.get("thread_id")
        if thread is not None:
            chat.properties["conversation_id"] = Schema(
                one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)],
                description="Alias of `thread_id`; send one or the other.",
            )


def _trimmed_text(prop: Schema, *, required: bool) -> None:
    """Document a field the server trims before checking its length.

    JSON Schema cannot say "length after trimming", so the limits move into the description: a schema `maxLength`
    would call `"  x"` padded past the limit invalid while the server rightly accepts it.
    """
    limits = f"{prop.min_length or 0}..{prop.max_length} characters" if prop.max_length else "no length limit"
    prop.description = " ".join(filter(None, [prop.description, f"Trimmed, then {limits}."]))
    prop.min_length = prop.max_length = None
    if required:
        prop.pattern = NOT_BLANK
        for option in prop.one_of or []:
            if isinstance(option, Schema) and option.type == OpenAPIType.STRING:
                option.pattern = NOT_BLANK


def document_api(app: Litestar, settings: Settings) -> None:
    """Rewrite the app's cached OpenAPI document in place (an `on_startup` hook; idempotent).

    Args:
        app: The built application; `app.openapi_schema` is what `/schema/openapi.json` serves.
        settings: Read for JWT mode (bearer scheme) and `MAX_MESSAGE_CHARS`.
    """
    spec = app.openapi_schema
    bearer = not settings.local_mode
    spec.components = spec.components or Components()
    schemas = spec.components.schemas = dict(spec.components.schemas or {})
    if ERROR_SCHEMA in schemas:
        return  # already rewritten (an app object can start more than once, e.g. in tests)
    schemas[ERROR_SCHEMA] = _error_schema()
    _refine_request_schemas(schemas, settings)
    if bearer:
        spec.components.security_schemes = {
            **(spec.components.security_schemes or {}),
            BEARER_SCHEME: SecurityScheme(
                type="http",
                scheme="bearer",
                bearer_format="JWT",
                description="An HS256 JWT signed with AUTH_SECRET; `sub` is the user id, `exp` is required.",
            ),
        }
        spec.security = [{BEARER_SCHEME: []}]
    body = {"application/json": OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{ERROR_SCHEMA}"))}
    for path, item in (spec.paths or {}).items():
        for method in _METHODS:
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            if (path, method) == (UPLOAD_PATH, "post"):
                operation.request_body = _upload_body()
            if (path, method) == (CONTENT_PATH, "get") and operation.responses and "200" in operation.responses:
                operation.responses["200"] = OpenAPIResponse(
                    description="The file's bytes, with the type sniffed at upload.",
                    content={
                        media_type: OpenAPIMediaType(
                            schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                        )
                        for media_type in sorted(SERVED_TYPES)
                    },
                )
            responses = {status: response for status, response in (operation.responses or {}).items() if status < "400"}
            for status in _statuses(path, method, operation, bearer=bearer):
                responses[status] = OpenAPIResponse(description=_DESCRIPTIONS[status], content=body)
            operation.responses = responses
