"""The type names of the ``ApplicationError``s Keel raises in its workflow and activities.

Temporal matches retry policies' ``non_retryable_error_types`` and clients read
failures by these names, so each is spelled here once.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    # A node attempt failed and may be retried (per the node's retry policy).
    NODE_ERROR = "NodeError"
    # A node attempt failed in a way another attempt cannot fix (bad credentials, ...).
    NON_RETRYABLE = "NonRetryable"
    # The workspace, workflow or agent is over its budget: no further model calls.
    BUDGET_EXCEEDED = "BudgetExceeded"
    # The model provider refused the request itself as malformed.
    INVALID_REQUEST = "InvalidRequest"
    # A response was sent to a human node that is not waiting for one.
    NOT_WAITING = "NotWaiting"
    # The execution failed (a node failed for good); ends the Temporal run as failed.
    EXECUTION_FAILED = "ExecutionFailed"
    # Workflow code raised something unexpected (a bug of ours): the execution fails with
    # it rather than leave Temporal retrying the workflow task forever.
    ENGINE_ERROR = "EngineError"
    # The record lacks events the workflow handed over as recorded before (a sync's
    # ``after``): the workflow falls back to the sync that reads the whole stream.
    RECORD_BEHIND = "RecordBehind"


# What no activity retry can fix: the retry policy of every node activity names these.
NON_RETRYABLE = (ErrorType.NON_RETRYABLE, ErrorType.BUDGET_EXCEEDED, ErrorType.INVALID_REQUEST)
