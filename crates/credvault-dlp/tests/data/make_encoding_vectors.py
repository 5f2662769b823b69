#!/usr/bin/env python3
"""Writes encodings.json: secrets as the real encoders of Python's standard library write
them (urllib.parse, json, html), plus Go's HTML-safe JSON escaping, for
credvault-dlp's tests/encodings.rs. Run from this directory: python3 make_encoding_vectors.py

Go is not on the build machines; its encoding/json HTMLEscape rule is applied to
json.dumps output exactly as documented (& < > as \\u0026 \\u003c \\u003e, U+2028 and
U+2029 as \\u2028 \\u2029) and every Go form is checked to decode back with json.loads.
Numeric HTML entities (decimal, hex) are written for the characters html.escape replaces,
and every HTML form is checked to decode back with html.unescape.
"""
import html
import json
import sys
import urllib.parse

SECRETS = [
    "Tr0ub4dor&3-horse/battery+staple",
    "p@ss word/with spaces&more",
    "<script>alert('x')</script>\"k\"",
    "sk_live_51H&x9aQ2>eZvKYlo2C0sT",
    "naïve-ключ/秘密 &tail",
    "line\u2028sep\u2029para&amp;",
    "a'b\"c<d>e&f g/h?i=j#k",
]

SPECIAL = {"&": 38, "<": 60, ">": 62, '"': 34, "'": 39}


def go_html_safe(s, ensure_ascii):
    out = json.dumps(s, ensure_ascii=ensure_ascii)
    out = out.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    out = out.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    assert json.loads(out) == s
    return out[1:-1]


def numeric(s, fmt):
    return "".join(fmt(SPECIAL[c]) if c in SPECIAL else c for c in s)


def forms(s):
    f = {
        "quote": urllib.parse.quote(s),
        "quote_safe_none": urllib.parse.quote(s, safe=""),
        "quote_plus": urllib.parse.quote_plus(s),
        "urlencode": urllib.parse.urlencode({"k": s})[2:],
        "json_ascii": json.dumps(s)[1:-1],
        "json_utf8": json.dumps(s, ensure_ascii=False)[1:-1],
        "go_json": go_html_safe(s, ensure_ascii=False),
        "go_json_ascii": go_html_safe(s, ensure_ascii=True),
        "html_escape": html.escape(s),
        "html_escape_noquote": html.escape(s, quote=False),
        "html_decimal": numeric(s, lambda n: "&#%d;" % n),
        "html_hex": numeric(s, lambda n: "&#x%x;" % n),
        # An HTML attribute holding JSON: json then html.
        "html_of_json": html.escape(json.dumps(s)[1:-1]),
    }
    for k in ("html_escape", "html_escape_noquote", "html_decimal", "html_hex"):
        assert html.unescape(f[k]) == s, k
    assert urllib.parse.unquote(f["quote"]) == s
    assert urllib.parse.unquote_plus(f["quote_plus"]) == s
    assert json.loads('"' + html.unescape(f["html_of_json"]) + '"') == s
    return f


def main():
    out = {
        "source": "Python %s: urllib.parse, json, html (this script)" % sys.version.split()[0],
        "vectors": [{"secret": s, "forms": forms(s)} for s in SECRETS],
    }
    with open("encodings.json", "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
