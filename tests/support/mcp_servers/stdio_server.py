"""A small MCP server over stdio, run by the tests as ``sys.executable stdio_server.py``.

It lives in a folder of its own because a script's folder comes first on its import
path: next to a module named like a library one (say ``platform.py``) it would break.

Tools: echo, env_status (says whether an environment variable is set, never its value),
fail (a tool error), slow (sleeps; writes its pid to $PIDFILE first), big (a long
answer). ``--crash MESSAGE`` writes MESSAGE to stderr and exits before speaking MCP.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("keel-test-stdio")


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return f"echo: {text}"


@server.tool()
def env_status(name: str) -> dict[str, object]:
    """Whether an environment variable is set (never its value)."""
    return {"name": name, "set": bool(os.environ.get(name))}


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ToolError(f"refused: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, after writing this process's pid to $PIDFILE."""
    pidfile = os.environ.get("PIDFILE")
    if pidfile:
        Path(pidfile).write_text(str(os.getpid()))
    await asyncio.sleep(seconds)
    return "finally"


@server.tool()
def big(size: int) -> str:
    """A text of ``size`` characters."""
    return "x" * size


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--crash":
        sys.stderr.write(sys.argv[2] + "\n")
        sys.exit(3)
    server.run("stdio")
