"""Why the door refused something a connection sent: one counter per cause (INFO's
``zcounter_resp_refused_<cause>`` lines), so an operator sees which bound is being hit
without a log line per event."""

from __future__ import annotations

from enum import Enum


class Refusal(str, Enum):
    """A cause.  Those marked *closes* end the connection after the error reply."""

    #: ``*N`` above the words allowed (closes).
    MULTIBULK_LENGTH = "multibulk_length"
    #: ``$L`` above the bytes allowed per argument, or not a length (closes).
    BULK_LENGTH = "bulk_length"
    #: A header line longer than any integer (closes).
    HEADER_BYTES = "header_bytes"
    #: A command larger than allowed (closes).
    COMMAND_BYTES = "command_bytes"
    #: The node's budget for unfinished commands is spent (closes).
    INPUT_BUDGET = "input_budget"
    #: Not an array (an inline command, a stray reply type) (closes).
    INLINE = "inline"
    #: An array element that is not a bulk string (a RESP3 or nested type) (closes).
    NOT_BULK = "not_bulk"
    #: A bulk string not followed by CRLF (closes).
    NO_CRLF = "no_crlf"
    #: hiredis refused what the framer passed (closes; a framer bug if ever seen).
    PARSER = "parser"
    #: A SCAN/KEYS pattern above the bytes allowed.
    PATTERN_BYTES = "pattern_bytes"
    #: A KEYS reply above the bytes allowed (answered with an error: use SCAN).
    KEYS_REPLY_BYTES = "keys_reply_bytes"
    #: A connection name or client-info string above the bytes allowed.
    CLIENT_STRING_BYTES = "client_string_bytes"
    #: A WAIT refused: the node's confirmations for WAIT are all in use.
    WAIT_BUSY = "wait_busy"
    #: A wrong password (AUTH, HELLO AUTH).
    AUTH_FAILURE = "auth_failure"
    #: Too many wrong passwords on one connection (closes).
    AUTH_FAILURES = "auth_failures"
    #: An exception in the handling of one connection's input (closes): a bug, caught at
    #: the session's boundary so that it costs that connection only.
    INTERNAL_ERROR = "internal_error"


__all__ = ["Refusal"]
