"""Shared assertions of the bad-input matrix: exit 2, one line, the place named, no damage."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing was changed)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_clean_error(result: Result, *fragments: str) -> str:
    """Exit status 2, exactly one line on stderr, no traceback, and every fragment in it."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    assert err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err
