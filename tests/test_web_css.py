"""The stylesheet's rules are all closed. A rule that lost its closing brace (a merge can
drop one line) is no syntax error to a browser: with CSS nesting, every rule after it
becomes a nested rule of it and silently matches nothing."""

from __future__ import annotations

import re
from pathlib import Path

CSS = Path(__file__).resolve().parent.parent / "yim" / "web" / "app.css"


def unclosed(text: str) -> list[str]:
    """Top-level rules (written from column 0) that start while an earlier one is still open."""
    depth = 0
    found: list[str] = []
    for number, line in enumerate(
        re.sub(r"/\*.*?\*/", lambda m: "\n" * m[0].count("\n"), text, flags=re.S).split("\n"), 1
    ):
        if depth and line[:1] not in ("", " ", "}"):
            found.append(f"app.css:{number}: {line.strip()} starts inside an open rule")
            depth = 0  # report each loss once
        depth += line.count("{") - line.count("}")
    if depth:
        found.append(f"app.css: {depth} rule(s) open at the end")
    return found


def test_every_rule_is_closed() -> None:
    assert unclosed(CSS.read_text(encoding="utf-8")) == []


def test_the_check_finds_a_lost_brace() -> None:
    assert unclosed(".a {\n  color: red;\n}\n\n@media (x) {\n  .b {\n    top: 0;\n  }\n}\n") == []
    lost = ".a {\n  color: red;\n/* next */\n.b {\n  top: 0;\n}\n"
    assert unclosed(lost) == ["app.css:4: .b { starts inside an open rule"]
    assert unclosed(".a {\n  color: red;\n") == ["app.css: 1 rule(s) open at the end"]
