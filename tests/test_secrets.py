"""The secret scanners themselves must be able to fail, and the logging filter must redact."""

from __future__ import annotations

import logging

from helpers import scan_for_secrets

from reconciler.cli.main import _RedactingFilter
from reconciler.redact import REDACT, Redactor


def test_scanner_finds_secrets_in_text_and_files(tmp_path):
    secret = "sk-planted-secret-0123456789"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leak.log").write_text(f"key={secret}\n")
    found = scan_for_secrets(["clean", f"oops {secret}"], tmp_path, [secret])
    assert found == ["output #1 holds sk-pla...", f"{tmp_path / 'sub' / 'leak.log'} holds sk-pla..."]
    assert scan_for_secrets(["clean"], tmp_path / "nothing", [secret]) == []


def test_redaction():
    redact = Redactor()
    redact.add("M4ST3R")
    assert redact("Bearer sk-abcdefghijkl and master M4ST3R") == "Bearer *** and master ***"
    assert redact("key sk-abcdefghijkl") == "key sk-***"
    REDACT.add("M4ST3R-in-process")
    record = logging.LogRecord("reconciler", logging.INFO, __file__, 1, "key %s", ("sk-verysecretvalue1",), None)
    _RedactingFilter().filter(record)
    assert record.getMessage() == "key sk-***"
    record = logging.LogRecord("reconciler", logging.INFO, __file__, 1, "held %s", ("M4ST3R-in-process",), None)
    _RedactingFilter().filter(record)
    assert record.getMessage() == "held ***"
