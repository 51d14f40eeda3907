"""A secret is masked in every form it takes in a line of output: whole, by each of its lines
when it spans several (output is masked line by line), JSON-escaped, and shell-quoted."""

from __future__ import annotations

import json
import shlex

from harness import openssh_private_key

from dlvm_cluster.secret_env import MASK, redactor

PEM = openssh_private_key()
ACCOUNT = json.dumps(
    {"type": "service_account", "private_key_id": "0123456789abcdef", "client_id": "4242"},
    indent=2,
)


def test_each_line_of_a_multi_line_secret_is_masked_wherever_it_appears() -> None:
    redact = redactor({"SSH_KEY": PEM, "ACCOUNT": ACCOUNT})
    for value in (PEM, ACCOUNT):
        for line in value.splitlines():
            shown = redact(line)
            assert shown.strip() in (MASK, "{", "}", ""), shown  # braces alone are no secret
            if len(line.strip()) >= 4:
                assert redact(f"[node-0] got {line.strip()} here") == f"[node-0] got {MASK} here"
        # Broken other ways: CRLF, re-indented, JSON-escaped on one line.
        for line in value.replace("\n", "\r\n").splitlines():
            assert redact(line).strip() in (MASK, "{", "}", "")
        assert "0123456789abcdef" not in redact(json.dumps(value))
        assert "b3BlbnNzaC1rZXktdjEA" not in redact(json.dumps(value))
    assert redact("an ordinary line") == "an ordinary line"


def test_a_secret_holding_a_quote_is_masked_as_bash_x_prints_it() -> None:
    value = "it's-a-secret"
    redact = redactor({"TOKEN": value})
    traced = f"+ curl -H {shlex.quote(value)}"
    assert value not in redact(traced) and "secret" not in redact(traced)
    assert redact(f"plain {value}") == f"plain {MASK}"


def test_short_values_and_short_lines_are_left_alone() -> None:
    redact = redactor({"SHORT": "abc", "LINES": "ab\ncd\nlong-enough"})
    assert redact("abc ab cd") == "abc ab cd"
    assert redact("x long-enough") == f"x {MASK}"
