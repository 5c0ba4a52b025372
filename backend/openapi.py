"""Make the generated OpenAPI document describe the API as it behaves.

Litestar documents every operation with its own 400 body (`{status_code, detail, extra}`) and nothing else. This
module rewrites the cached document once, after the app is built: every error is our `{"error": {code, message}}`
body, every operation lists the statuses it can answer, the bearer scheme is declared (JWT mode), and request fields
say what the server really accepts (trimmed text must not be blank, `null` only where it is accepted, the
`conversation_id` alias of `/chatkit`).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    Discriminator,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

from backend import contract
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
    "(`idempotency_conflict`), the answers name nothing pending (`not_pending`, `nothing_pending`), or an upload's "
    "chosen id is taken (`file_exists`).",
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
MCP_PATH = "/mcp"
STREAMS = {("/chatkit", "post"), ("/chatkit/{message_id}/stream", "get")}
EVENT_IDS = ("Last-Event-ID", "after")
_STREAM_DESCRIPTION = (
    "An SSE stream (`text/event-stream`). Each frame is an `id:` line, one `data:` line holding one `Event` as JSON, "
    "and a blank line; keep-alive comments may come between frames. The stream opens with `start` and ends with "
    "`done`, then the frame `data: [DONE]`. OpenAPI 3.1 cannot type the items of a stream, so the schema is the type "
    "of one `data:` line (what OpenAPI 3.2 calls `itemSchema`; this document is 3.1, which Litestar 2.25 writes and "
    "Swagger UI 5 and schemathesis read). The same types: /static/protocol.d.ts and /static/protocol.schema.json."
)
_MCP_DESCRIPTION = (
    "The task tools over the Model Context Protocol (Streamable HTTP, stateless, JSON responses): every POST carries "
    "one whole JSON-RPC 2.0 message (`initialize`, `tools/list`, `tools/call`, ...), no session is kept. Send "
    "`Accept: application/json, text/event-stream` and, in JWT mode, the same bearer token as the rest of the API: "
    "the tools act for its user. Other errors are the `mcp` package's JSON-RPC error bodies. Use an MCP client "
    "rather than this page to call it."
)
Json = dict[str, Any]
_SCHEMA_KEYS = {
    "anyOf": "any_of",
    "oneOf": "one_of",
    "allOf": "all_of",
    "not": "schema_not",
    "additionalProperties": "additional_properties",
    "maxItems": "max_items",
    "minItems": "min_items",
    "maxLength": "max_length",
    "minLength": "min_length",
}


def schema_of(node: Json) -> Schema | Reference:
    """A JSON Schema object (as `backend.contract` writes it) as Litestar's OpenAPI spec objects."""
    if "$ref" in node:
        return Reference(ref=node["$ref"])
    fields: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            value = OpenAPIType(value)
        elif key == "properties":
            value = {name: schema_of(prop) for name, prop in value.items()}
        elif key in {"anyOf", "oneOf", "allOf"}:
            value = [schema_of(option) for option in value]
        elif key in {"items", "not"} or (key == "additionalProperties" and isinstance(value, dict)):
            value = schema_of(value)
        elif key == "discriminator":
            value = Discriminator(property_name=value["propertyName"], mapping=value.get("mapping"))
        fields[_SCHEMA_KEYS.get(key, key)] = value
    return Schema(**fields)


def _ref(name: str) -> Reference:
    return Reference(ref=f"#/components/schemas/{name}")


def _chat_request_kinds() -> list[Json]:
    """`POST /chatkit` takes exactly one kind of body; each alternative, as the server's validation decides it."""
    absent = {"type": "null"}  # a property's schema applies only when present: "absent or null"
    with_thread = {
        "anyOf": [
            {"required": ["thread_id"], "properties": {"thread_id": {"type": "string"}}},
            {"required": ["conversation_id"], "properties": {"conversation_id": {"type": "string"}}},
        ]
    }
    no_attachments = {"type": "array", "maxItems": 0}
    return [
        {
            "title": "SendMessage",
            "description": "A user message (text, attachments, or both), to `thread_id` or to a new conversation; "
            "with `edit_of` (and `thread_id`), a new version of an earlier user message.",
            "properties": {"action": absent, "approvals": absent, "client_tool_results": absent},
            "anyOf": [
                {"required": ["message"], "properties": {"message": {"type": "string", "pattern": NOT_BLANK}}},
                {
                    "required": ["attachments"],
                    "properties": {"message": absent, "attachments": {"type": "array", "minItems": 1}},
                },
            ],
        },
        {
            "title": "WidgetAction",
            "description": "A widget action in conversation `thread_id`.",
            "required": ["action"],
            "properties": {
                "action": {"$ref": "#/components/schemas/Action"},
                "message": absent,
                "edit_of": absent,
                "approvals": absent,
                "client_tool_results": absent,
                "attachments": no_attachments,
            },
            **with_thread,
        },
        {
            "title": "AnswerPause",
            "description": "The answers a paused reply in `thread_id` waits for: every pending approval and client "
            "tool, answered once.",
            "properties": {"message": absent, "action": absent, "edit_of": absent, "attachments": no_attachments},
            "allOf": [
                with_thread,
                {
                    "anyOf": [
                        {"required": ["approvals"], "properties": {"approvals": {"type": "array"}}},
                        {
                            "required": ["client_tool_results"],
                            "properties": {"client_tool_results": {"type": "array"}},
                        },
                    ]
                },
            ],
        },
    ]


def _array_limits(schema: Schema | Reference) -> None:
    """Make a list's limit `maxItems` on the array itself.

    Litestar writes a list's `max_length` as `maxLength` (a string keyword), beside the nullable `oneOf`.
    """
    if not isinstance(schema, Schema):
        return
    if schema.max_length is not None:
        arrays = [o for o in [schema, *(schema.one_of or [])] if isinstance(o, Schema) and o.type == OpenAPIType.ARRAY]
        if arrays:
            arrays[-1].max_items, schema.max_length = schema.max_length, None
    for prop in (schema.properties or {}).values():
        _array_limits(prop)


def _event_id_parameter(parameter: Parameter) -> None:
    """`Last-Event-ID` and `after` are event ids, 0 and up (Litestar drops a `ge=0`, and puts limits beside `oneOf`)."""
    schema = parameter.schema
    if isinstance(schema, Schema):
        for option in schema.one_of or []:
            if isinstance(option, Schema) and option.type == OpenAPIType.INTEGER:
                option.minimum, option.maximum = 0, schema.maximum
        schema.maximum = None


def _mcp_path() -> PathItem:
    ids = [Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.INTEGER), Schema(type=OpenAPIType.NULL)]
    jsonrpc = {"jsonrpc": Schema(const="2.0"), "id": Schema(one_of=ids)}
    message = Schema(
        type=OpenAPIType.OBJECT,
        required=["jsonrpc", "method"],
        properties={**jsonrpc, "method": Schema(type=OpenAPIType.STRING), "params": Schema(type=OpenAPIType.OBJECT)},
        description="One JSON-RPC 2.0 request or notification.",
    )
    answer = Schema(
        type=OpenAPIType.OBJECT,
        required=["jsonrpc"],
        properties={**jsonrpc, "result": Schema(type=OpenAPIType.OBJECT), "error": Schema(type=OpenAPIType.OBJECT)},
        description="The JSON-RPC 2.0 response: `result`, or `error`.",
    )
    return PathItem(
        post=Operation(
            tags=["mcp"],
            summary="MCP server (the task tools)",
            description=_MCP_DESCRIPTION,
            operation_id="Mcp",
            request_body=RequestBody(content={"application/json": OpenAPIMediaType(schema=message)}, required=True),
            responses={
                "200": OpenAPIResponse(
                    description="The JSON-RPC response.", content={"application/json": OpenAPIMediaType(answer)}
                ),
                "202": OpenAPIResponse(description="A notification was accepted; no body."),
                "400": OpenAPIResponse(
                    description="Not a valid JSON-RPC message: a JSON-RPC error.",
                    content={"application/json": OpenAPIMediaType(answer)},
                ),
            },
        )
    )


def _document_contract(spec_paths: dict[str, PathItem], schemas: dict[str, Schema]) -> None:
    """Type the streams and the stored parts with the published contract (`backend.contract`)."""
    published = contract.openapi_components()
    clashes = published.keys() & schemas.keys()
    assert not clashes, f"contract schemas clash with the API's: {clashes}"
    for name, schema in published.items():
        component = schema_of(schema)
        assert isinstance(component, Schema)
        schemas[name] = component
    message = schemas.get("MessagePublic")
    if isinstance(message, Schema) and message.properties:
        message.properties["parts"] = Schema(
            type=OpenAPIType.ARRAY,
            items=_ref(contract.PART_UNION),
            description="The reply as ordered typed parts; `content` is its joined text.",
        )
    for path, method in STREAMS:
        operation: Operation | None = getattr(spec_paths.get(path), method, None)
        if operation is not None and operation.responses:
            operation.responses["200"] = OpenAPIResponse(
                description=_STREAM_DESCRIPTION,
                content={"text/event-stream": OpenAPIMediaType(schema=_ref(contract.EVENT_UNION))},
            )


EXPORT = ("/api/conversations/{conversation_id}/export", "get")


def _document_export(spec_paths: dict[str, PathItem]) -> None:
    """The export answers JSON or, with `format=markdown`, a Markdown transcript: both media types on its 200."""
    path, method = EXPORT
    operation: Operation | None = getattr(spec_paths.get(path), method, None)
    if operation is None or not operation.responses:
        return
    answer = operation.responses.get("200")
    if isinstance(answer, OpenAPIResponse) and answer.content is not None:
        answer.content["text/markdown"] = OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING, description="A readable transcript (`format=markdown`).")
        )


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


def _chatkit_error_body() -> dict[str, OpenAPIMediaType]:
    """ChatKit's `error` event shape with our error object inside, or our plain error body.

    The checks before the route (auth, body size and type) answer the plain one.
    """
    ours = Reference(ref=f"#/components/schemas/{ERROR_SCHEMA}")
    inner = _error_schema().properties
    assert inner is not None
    chatkit = Schema(
        type=OpenAPIType.OBJECT,
        required=["type", "code", "message", "allow_retry", "error"],
        properties={
            "type": Schema(type=OpenAPIType.STRING, const="error"),
            "code": Schema(type=OpenAPIType.STRING, const="custom"),
            "message": Schema(type=OpenAPIType.STRING, min_length=1),
            "allow_retry": Schema(type=OpenAPIType.BOOLEAN),
            "error": inner["error"],
        },
        additional_properties=False,
    )
    return {"application/json": OpenAPIMediaType(schema=Schema(any_of=[chatkit, ours]))}


def _chatkit_answer() -> OpenAPIResponse:
    return OpenAPIResponse(
        description="`threads.create`, `threads.add_user_message`, `threads.add_client_tool_output`, "
        "`threads.retry_after_item` and `threads.custom_action` stream ChatKit's `ThreadStreamEvent`s as "
        "`data: <json>` frames; the other requests answer JSON (`Thread`, `Page`, `Attachment`, `{}`). See "
        "backend/protocols/CHATKIT.md.",
        content={
            "text/event-stream": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
            "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT)),
        },
    )


TURN_PATHS = frozenset({"/chatkit", "/api/chat"})  # the endpoints that start turns: a chat to find, a run to wait for


def _statuses(path: str, method: str, operation: Operation, *, bearer: bool, turn_paths: frozenset[str]) -> list[str]:
    """The error statuses one operation can answer, from its path, method, parameters and body."""
    public = operation.security == [{}]
    statuses: set[str] = set()
    if bearer and not public:
        statuses.add("401")
    if operation.request_body is not None or (path, method) == (UPLOAD_PATH, "post"):
        statuses |= {"400", "413", "415", "422"}
    if (path, method) == (UPLOAD_PATH, "post"):
        statuses.add("409")  # `?id=` of a file that exists (a ChatKit two-phase upload sent twice)
    if operation.parameters:
        statuses.add("422")
    if "{" in path or path in turn_paths:
        statuses.add("404")
    if path in turn_paths:
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
        chat.one_of = [schema_of(kind) for kind in _chat_request_kinds()]
        chat.additional_properties = False
        chat.required = None
    for schema in schemas.values():
        _array_limits(schema)


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
    spec.paths = dict(spec.paths or {})
    _document_contract(spec.paths, schemas)
    _document_export(spec.paths)
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
    turn_paths = TURN_PATHS | {settings.agui_path, settings.chatkit_path}
    for path, item in (spec.paths or {}).items():
        for method in _METHODS:
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            for parameter in operation.parameters or []:
                if isinstance(parameter, Parameter) and parameter.name in EVENT_IDS:
                    _event_id_parameter(parameter)
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
            chatkit = path == settings.chatkit_path
            for status in _statuses(path, method, operation, bearer=bearer, turn_paths=turn_paths):
                content = _chatkit_error_body() if chatkit else body
                responses[status] = OpenAPIResponse(description=_DESCRIPTIONS[status], content=content)
            if chatkit:
                responses["200"] = _chatkit_answer()
            operation.responses = responses
    mcp = spec.paths[MCP_PATH] = _mcp_path()
    assert mcp.post is not None and mcp.post.responses is not None
    mcp_errors = ["401"] if bearer else []
    for status in [*mcp_errors, "413", "415"]:
        mcp.post.responses[status] = OpenAPIResponse(description=_DESCRIPTIONS[status], content=body)
