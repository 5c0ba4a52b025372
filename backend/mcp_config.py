"""The `MCP_SERVERS` setting: which external MCP servers the agent uses, as typed configuration.

The value is JSON, or the path of a JSON file. It is a list of server objects, or an object mapping each name to its
server (the `mcpServers` shape desktop MCP clients use, optionally wrapped in `{"mcpServers": ...}`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

ServerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]


class _ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ServerName = Field(description="Unique; tools are exposed to the model as mcp_<name>__<tool>.")
    tools: tuple[str, ...] | None = Field(default=None, description="Allow-list of tool names; omit for all.")
    require_approval: bool = Field(
        default=False, description="Every call pauses the run until the user approves it (approval_request)."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="How long one request to the server may take.")


class StdioServerConfig(_ServerBase):
    """A server the backend starts as a child process and talks to over stdin/stdout."""

    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    cwd: str | None = None


class HttpServerConfig(_ServerBase):
    """A server reached over MCP streamable HTTP."""

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    send_user_id: bool = Field(
        default=False,
        description="Send the chat user's id with every tool call, in the request's `_meta` as \"chatkit/user_id\".",
    )


McpServerConfig = StdioServerConfig | HttpServerConfig

_SERVERS = TypeAdapter(list[McpServerConfig])


def parse_mcp_servers(value: object) -> list[McpServerConfig]:
    """Parse the `MCP_SERVERS` setting.

    Args:
        value: JSON text, a path to a JSON file, an empty value, or already-decoded JSON.

    Returns:
        The servers, in order.

    Raises:
        ValueError: If the JSON is malformed, a server is invalid, or two servers share a name.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith(("[", "{")):
            try:
                text = Path(text).expanduser().read_text(encoding="utf-8")
            except OSError as error:
                raise ValueError(f"cannot read {value!r}: {error.strerror}") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(value, dict):
        named = value.get("mcpServers", value)
        if not isinstance(named, dict):
            raise ValueError("mcpServers must map server names to servers")
        value = [{"name": name, **server} for name, server in named.items()]
    try:
        servers = _SERVERS.validate_python(value)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise ValueError(f"{where}: {problem['msg']}") from None
    names = [server.name for server in servers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"server names must be unique: {', '.join(duplicates)}")
    return servers
