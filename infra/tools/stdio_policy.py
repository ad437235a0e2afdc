"""Which commands an MCP ``stdio`` tool may start on the worker's host.

A stdio tool runs a program as the worker's user, so it is an operator's decision:

- the command must be one of ``KEEL_MCP_STDIO_ALLOWED``, compared exactly as written
  (empty by default: stdio tools are disabled until an operator lists a server);
- an interpreter given code on its command line (``python -c``, ``node -e``,
  ``deno eval``, ``sh -c``, ``pwsh -Command`` ...) is refused even when listed: that
  would let whoever saves the tool run anything.

The API checks this when a tool is saved (422) and the MCP client again right before it
starts the process (the allowlist may have changed since).
"""

from __future__ import annotations

import re
from pathlib import PurePath

ALLOWED_SETTING = "KEEL_MCP_STDIO_ALLOWED"

# Programs that run code they are given as an argument; version suffixes allowed
# (python3.12, node20), and a Windows .exe.
INTERPRETERS = re.compile(
    r"^(python|pypy|node|nodejs|deno|bun|ruby|irb|perl|php|lua|luajit|tclsh|wish|rscript|"
    r"julia|osascript|awk|gawk|sh|bash|dash|zsh|ksh|fish|csh|tcsh|pwsh|powershell|cmd|"
    r"env|uv|uvx|npx|busybox)[0-9.]*(\.exe)?$",
    re.IGNORECASE,
)
# Arguments that hand an interpreter its program inline.
INLINE_CODE_ARGS = frozenset(
    {
        "-c",
        "-e",
        "-p",
        "-r",
        "--eval",
        "--print",
        "--exec",
        "--command",
        "-command",
        "-Command",
        "-encodedcommand",
        "-EncodedCommand",
        "/c",
        "/C",
        "eval",
        "exec",
        "run-script",
        "--code",
    }
)
# A short-option cluster that ends in or contains c/e/p/r (python -Ic, node -pe, sh -ec).
INLINE_CLUSTER = re.compile(r"^-[A-Za-z]*[cepr][A-Za-z]*$")


def inline_code_argument(command: str, args: list[str]) -> str | None:
    """The argument that gives ``command`` inline code, if ``command`` is an interpreter."""
    if not INTERPRETERS.match(PurePath(command.replace("\\", "/")).name):
        return None
    for arg in args:
        flag = arg.split("=", 1)[0]
        if (
            flag in INLINE_CODE_ARGS
            or flag.lower() in INLINE_CODE_ARGS
            or INLINE_CLUSTER.match(flag)
        ):
            return arg
    return None


def stdio_refusal(command: str, args: list[str], allowed: list[str]) -> str | None:
    """Why this stdio command may not run, or None when it may."""
    if not allowed:
        return (
            f"MCP stdio tools are disabled on this server: an operator enables them by "
            f"listing the exact server commands in {ALLOWED_SETTING}"
        )
    if command not in allowed:
        return (
            f"command {command!r} is not in {ALLOWED_SETTING} (allowed: "
            f"{', '.join(allowed)}); commands are compared exactly as written"
        )
    inline = inline_code_argument(command, args)
    if inline is not None:
        return (
            f"{command!r} with {inline[:40]!r} runs code given on its command line; "
            "start an MCP server program or script instead"
        )
    return None
