"""Hostile inputs: work a request or a file controls that would run without end unless bounded.

Each is small to send and enormous to do: chat templates that loop, double a
string or recurse; JSON schemas whose grammars multiply; documents that
inflate or that parsers chew on for minutes; an expression for the agents'
calculator. The tests (``tests/api/test_bounded_work.py``) and the benchmark
(``bench/bounded.py``) send the same ones.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

# Chat templates (Ollama's ``template``, a Modelfile's TEMPLATE, a GGUF's chat_template).
NESTED_LOOPS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
CONCAT_DOUBLING = (
    '{% set ns = namespace(text="x") %}{% for i in range(64) %}'
    "{% set ns.text = ns.text ~ ns.text %}{% endfor %}{{ ns.text }}"
)
MACRO_RECURSION = "{% macro deeper(n) %}{{ deeper(n + 1) }}{% endmacro %}{{ deeper(0) }}"
TEMPLATES = {
    "nested-loops": NESTED_LOOPS,
    "concat-doubling": CONCAT_DOUBLING,
    "macro-recursion": MACRO_RECURSION,
}

# The agents' calculator: 10 ** 100000000 computed to round to it.
SLOW_EXPRESSION = "round(1, -10**8)"


def tool_call(name: str, arguments: dict[str, Any]) -> str:
    """A model's answer calling one tool, as the tool-calling grammar shapes it."""
    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments}]})


# JSON schemas, each with the keyword that makes its grammar too large to build or use.
SCHEMAS: dict[str, tuple[dict[str, Any], str]] = {
    "minLength": ({"type": "string", "minLength": 100_000_000}, "minLength"),
    "maxLength": ({"type": "string", "maxLength": 5000}, "maxLength"),
    "minItems": ({"type": "array", "items": {"type": "integer"}, "minItems": 10**7}, "minItems"),
    "maxItems": (
        {"type": "object", "properties": {"rows": {"type": "array", "maxItems": 10**6}}},
        "maxItems",
    ),
    "pattern": ({"type": "string", "pattern": "^(ab){1,1000000}$"}, "pattern"),
    "enum": ({"enum": [f"value {n}" for n in range(5000)]}, "enum"),
    "anyOf": ({"anyOf": [{"const": n} for n in range(5000)]}, "anyOf"),
    "properties": (
        {"type": "object", "properties": {f"p{n}": {"type": "string"} for n in range(1000)}},
        "properties",
    ),
}


def nested(depth: int) -> dict[str, Any]:
    """An array of arrays ``depth`` deep."""
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


SCHEMAS["depth"] = (nested(200), "deeper")
SCHEMAS["size"] = (
    {"type": "object", "description": "x" * 300_000, "properties": {"a": {"type": "string"}}},
    "bytes",
)


def docx_bomb() -> bytes:
    """A real docx whose document is 120 MB of valid XML (empty paragraphs), zipped to ~120 KB.

    Under the old 128 MB limit for the whole archive, python-docx parsed it
    into some 20 million elements.
    """
    import docx

    blank = io.BytesIO()
    docx.Document().save(blank)
    buffer = io.BytesIO()
    namespace = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    with (
        zipfile.ZipFile(blank) as template,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
    ):
        for member in template.infolist():
            if member.filename != "word/document.xml":
                archive.writestr(member, template.read(member))
        with archive.open("word/document.xml", "w") as document:
            document.write(f'<w:document xmlns:w="{namespace}"><w:body>'.encode())
            paragraphs = b"<w:p/>" * (1 << 20)
            for _ in range(20):
                document.write(paragraphs)
            document.write(b"</w:body></w:document>")
    return buffer.getvalue()


def quadratic_html(repeats: int = 400_000) -> bytes:
    """HTML that Python 3.11's ``HTMLParser`` reads in quadratic time (CVE-2025-6069)."""
    return b"<html><body>" + b"</" * repeats


def slow_pdf(pages: int = 100, operations: int = 300_000) -> bytes:
    """A few kilobytes of PDF whose pages share one content stream of ``operations`` text draws.

    pypdf takes seconds for each page's text.
    """
    content = zlib.compress(b"BT /F1 12 Tf " + b"(a) Tj " * operations + b"ET", 9)
    kids = " ".join(f"{5 + n} 0 R" for n in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content)
        + content
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
        b"/Resources << /Font << /F1 4 0 R >> >> >>"
    )
    objects += [page] * pages
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    table = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1))
    out.write(b"startxref\n%d\n%%%%EOF\n" % table)
    return out.getvalue()


DOCUMENTS = {
    "bomb.docx": docx_bomb,
    "page.html": quadratic_html,
    "report.pdf": slow_pdf,
}


def gguf_with_template(path: Path, template: str) -> bytes:
    """A tiny GGUF (no usable weights) whose own ``tokenizer.chat_template`` is ``template``.

    Its template is rendered before the model would be loaded, so it is all a
    hostile model file needs.
    """
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(512)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>", "a"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()
