"""A small JavaScript scanner for the web client's translation checks (tests/test_web_i18n.py).

It splits a module into tokens (strings, template literals, regex literals, comments and
punctuation told apart, which a line-based grep cannot) and finds two things:
- the t()/tn() keys, which must all be in the Chinese catalog;
- string literals the page would show untranslated: a child of h(), the value of a prop
  that people read (aria-label, title, placeholder, a dialog's or menu's label), the
  right-hand side of `.textContent =` and the like, and the text of toast() or new Error().
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_NUMBER = re.compile(r"\d[\w.]*")
# After one of these a "/" starts a regular expression, not a division.
_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^") | {"return", "typeof", "case", "of", "in", "else", "yield", None}
_LETTERS = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Tok:
    kind: str  # "str", "tpl", "re", "id", "num", "p" (punctuation)
    text: str  # the token as written (a string's source, quotes included)
    value: str  # a string's value; a template's text outside ${…}; else the text
    line: int
    pos: int = 0  # offset of the token in the source


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(src)

    def line_at(pos: int) -> int:
        return src.count("\n", 0, pos) + 1

    def prev() -> str | None:
        for tok in reversed(toks):
            return tok.text if tok.kind in ("p", "id") else "value"
        return None

    def template(start: int) -> int:
        """Scans a template literal from its opening backquote; returns the end."""
        j = start + 1
        while j < n:
            c = src[j]
            if c == "\\":
                j += 2
            elif c == "`":
                return j + 1
            elif src.startswith("${", j):
                depth, j = 1, j + 2
                while j < n and depth:
                    c = src[j]
                    if c in "\"'":
                        j = string(j)
                        continue
                    if c == "`":
                        j = template(j)
                        continue
                    depth += {"{": 1, "}": -1}.get(c, 0)
                    j += 1
            else:
                j += 1
        raise ValueError(f"unterminated template literal at line {line_at(start)}")

    def string(start: int) -> int:
        quote, j = src[start], start + 1
        while j < n and src[j] != quote:
            if src[j] == "\n":
                raise ValueError(f"unterminated string at line {line_at(start)}")
            j += 2 if src[j] == "\\" else 1
        return j + 1

    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif src.startswith("//", i):
            i = src.find("\n", i) if "\n" in src[i:] else n
        elif src.startswith("/*", i):
            i = src.index("*/", i) + 2
        elif c in "\"'":
            j = string(i)
            text = src[i:j]
            toks.append(Tok("str", text, _unquote(text), line_at(i), i))
            i = j
        elif c == "`":
            j = template(i)
            text = src[i:j]
            toks.append(Tok("tpl", text, re.sub(r"\$\{.*?\}", "", text[1:-1], flags=re.S), line_at(i), i))
            i = j
        elif c == "/" and prev() in _REGEX_BEFORE:
            j, klass = i + 1, False
            while src[j] != "/" or klass:
                if src[j] == "\\":
                    j += 1
                elif src[j] == "[":
                    klass = True
                elif src[j] == "]":
                    klass = False
                j += 1
            j += 1
            while j < n and src[j].isalpha():
                j += 1
            toks.append(Tok("re", src[i:j], src[i:j], line_at(i)))
            i = j
        elif m := _IDENT.match(src, i):
            toks.append(Tok("id", m.group(), m.group(), line_at(i)))
            i = m.end()
        elif m := _NUMBER.match(src, i):
            toks.append(Tok("num", m.group(), m.group(), line_at(i)))
            i = m.end()
        else:
            toks.append(Tok("p", c, c, line_at(i)))
            i += 1
    return toks


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(u\{?[0-9a-fA-F]+\}?|.)", lambda m: _escape(m.group(1)), body)


def _escape(seq: str) -> str:
    if seq[0] == "u":
        return chr(int(seq[1:].strip("{}"), 16))
    return {"n": "\n", "t": "\t"}.get(seq, seq)


def _args(toks: list[Tok], open_at: int) -> tuple[list[list[Tok]], int]:
    """The top-level arguments of the call whose "(" is toks[open_at], each as its tokens
    at that level only (nested brackets' contents left out); and the index after ")"."""
    args: list[list[Tok]] = [[]]
    depth, i = 0, open_at
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "p" and tok.text in "([{":
            depth += 1
            if depth > 1:
                args[-1].append(tok)
        elif tok.kind == "p" and tok.text in ")]}":
            depth -= 1
            if depth == 0:
                return [a for a in args if a], i + 1
            args[-1].append(tok)
        elif depth == 1 and tok.kind == "p" and tok.text == ",":
            args.append([])
        elif depth == 1:
            args[-1].append(tok)
        i += 1
    return args, i


def _until(toks: list[Tok], start: int, stops: str) -> list[Tok]:
    """Tokens from start up to a stop character at the same bracket depth, nested ones left out."""
    out: list[Tok] = []
    depth = 0
    for tok in toks[start:]:
        if tok.kind == "p" and tok.text in "([{":
            depth += 1
        elif tok.kind == "p" and tok.text in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and tok.kind == "p" and tok.text in stops:
            break
        elif depth == 0:
            out.append(tok)
    return out


@dataclass(frozen=True)
class Keys:
    plain: list[tuple[str, int]]  # (key, line) of every t("…")
    plural: list[tuple[str, str, int]]  # (one, other, line) of every tn("…", "…", …)
    bad: list[tuple[str, int]]  # t()/tn() calls whose text is not a plain literal


def translation_keys(toks: list[Tok]) -> Keys:
    plain: list[tuple[str, int]] = []
    plural: list[tuple[str, str, int]] = []
    bad: list[tuple[str, int]] = []
    for i, tok in enumerate(toks[:-1]):
        if tok.kind != "id" or tok.text not in ("t", "tn") or toks[i + 1].text != "(":
            continue
        if i and toks[i - 1].text in (".", "function"):
            continue
        args, _ = _args(toks, i + 1)
        texts = [a[0] if len(a) == 1 and a[0].kind == "str" else None for a in args[: 1 if tok.text == "t" else 2]]
        if not texts or None in texts or (tok.text == "tn" and len(texts) < 2):
            bad.append((tok.text, tok.line))
        elif tok.text == "t":
            plain.append((texts[0].value, tok.line))  # type: ignore[union-attr]
        else:
            plural.append((texts[0].value, texts[1].value, tok.line))  # type: ignore[union-attr]
    return Keys(plain, plural, bad)


# Props whose value people read or hear; `label`/`text`/`sub` are this client's own
# option names for menus, dialogs and list rows.
VISIBLE_PROPS = {
    "aria-label",
    "title",
    "placeholder",
    "alt",
    "label",
    "text",
    "sub",
    "submitLabel",
    "confirmLabel",
    "cancelLabel",
    "body",
    "empty",
    "hint",
}
VISIBLE_SETTERS = {"textContent", "title", "placeholder", "ariaLabel", "innerText", "label"}
# Calls whose arguments at those indexes are shown: field(label, input), openMenu(at, items,
# label), asyncForm(label, children, submitLabel, run) and the like are this client's own
# helpers.
VISIBLE_CALLS = {
    "toast": (0,),
    "alert": (0,),
    "confirm": (0,),
    "Error": (0,),
    "Notification": (0,),
    "field": (0,),
    "openMenu": (2,),
    "asyncForm": (0, 2),
    "section": (0,),
    "table": (0,),
    "searchForm": (0, 1),
    "stat": (0,),
}
VISIBLE_ATTRIBUTES = {"aria-label", "title", "placeholder", "alt"}


# Literals that are the same in every language, each with why.
NOT_WORDS = {
    "y": "the logo's letter",
    "yim": "the product's name",
}


def _visible(tok: Tok) -> bool:
    words = re.sub(r"\b(" + "|".join(map(re.escape, NOT_WORDS)) + r")\b", "", tok.value)
    return tok.kind in ("str", "tpl") and bool(_LETTERS.search(words))


def untranslated(toks: list[Tok]) -> list[Tok]:
    """String literals in places the page shows, not passed through t()/tn()."""
    found: list[Tok] = []
    # A literal compared with (`err.code === "blocked"`) is a code, not a text.
    compared = {
        tok.pos
        for i, tok in enumerate(toks)
        if tok.kind == "str"
        and (
            (i >= 2 and toks[i - 1].text == "=" and toks[i - 2].text in "=!")
            or (i + 2 < len(toks) and toks[i + 1].text in "=!" and toks[i + 2].text == "=")
        )
    }
    for i, tok in enumerate(toks[:-1]):
        nxt = toks[i + 1]
        if tok.kind == "id" and nxt.text == "(" and (i == 0 or toks[i - 1].text != "."):
            if tok.text == "h":
                args, _ = _args(toks, i + 1)
                found += [a for arg in args[2:] for a in arg if _visible(a)]
            elif tok.text in VISIBLE_CALLS:
                args, _ = _args(toks, i + 1)
                found += [a for at in VISIBLE_CALLS[tok.text] if at < len(args) for a in args[at] if _visible(a)]
        if tok.text == "setAttribute" and nxt.text == "(" and toks[i + 2].value in VISIBLE_ATTRIBUTES:
            args, _ = _args(toks, i + 1)
            found += [a for a in args[1] if _visible(a)] if len(args) > 1 else []
        elif (tok.kind == "id" or tok.kind == "str") and tok.value in VISIBLE_PROPS and nxt.text == ":":
            # An object's prop (not a ternary's "?…:" nor a label: these sit after "{" or ",").
            if i and toks[i - 1].text in "{,":
                found += [a for a in _until(toks, i + 2, ",;") if _visible(a)]
        elif (
            tok.kind == "id"
            and tok.text in VISIBLE_SETTERS
            and i
            and toks[i - 1].text == "."
            and nxt.text == "="
            and toks[i + 2].text != "="
        ):
            found += [a for a in _until(toks, i + 2, ",;") if _visible(a)]
    return [tok for tok in found if tok.pos not in compared]
