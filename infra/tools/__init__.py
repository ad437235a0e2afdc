"""Calling tools (HTTP and MCP): shared by the node activities and POST /Tool/{id}/test."""
