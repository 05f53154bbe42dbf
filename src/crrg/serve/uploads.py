"""The multipart upload of a report request: read on the event loop, parsed in a worker thread.

The event loop only appends body chunks to a buffer (the size limit is enforced as they arrive, by
:class:`crrg.serve.security.BodyLimitMiddleware`); the multipart parsing happens in one pass over
the whole body in a worker thread. Starlette's streaming form parser costs the event loop about
three times as much per byte (small writes, a thread hop per chunk once a part spills to disk),
time during which no other request (not even a 429) can be answered. Memory stays bounded: only
admitted requests are read, each at most ``max_upload_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect, Request

from crrg.serve.security import BodyTooLarge

FILE_FIELDS = (("frontal", "frontal"), ("lateral", "lateral"), ("image", None))  # field name, view hint


class FormProblem(Exception):
    """The request body is unusable; carries the status and message to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Part:
    name: str
    filename: str | None
    data: bytes


@dataclass
class Upload:
    files: list[tuple[bytes, str | None]] = field(default_factory=list)  # (bytes, view hint)
    indication: str = ""


async def read_body(request: Request, max_bytes: int) -> bytearray:
    """The whole request body (413 via :class:`FormProblem` past ``max_bytes``; 400 when the client
    goes away before sending it all, an answer nobody reads but no error of ours)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
    except BodyTooLarge:
        raise FormProblem(413, f"upload too large: the limit is {max_bytes} bytes") from None
    except ClientDisconnect:
        raise FormProblem(400, "the client disconnected before sending the whole body") from None
    return body


def parse_form(body: bytearray, content_type: str, max_parts: int) -> list[Part]:
    """The parts of a ``multipart/form-data`` body (400 via :class:`FormProblem` when malformed)."""
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise FormProblem(400, "the multipart body has no boundary in its Content-Type")
    parts: list[Part] = []
    current: dict = {}

    def begin() -> None:
        current.clear()
        current.update(headers={}, name=bytearray(), value=bytearray(), chunks=[])

    def header_end() -> None:
        current["headers"][bytes(current["name"]).lower()] = bytes(current["value"])
        current["name"], current["value"] = bytearray(), bytearray()

    def end() -> None:
        if len(parts) >= max_parts:
            raise FormProblem(400, f"too many form fields (at most {max_parts})")
        _, disposition = parse_options_header(current["headers"].get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        parts.append(Part(name=disposition.get(b"name", b"").decode("utf-8", "replace"),
                          filename=None if filename is None else filename.decode("utf-8", "replace"),
                          data=b"".join(current["chunks"])))

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": lambda d, s, e: current["name"].extend(d[s:e]),
        "on_header_value": lambda d, s, e: current["value"].extend(d[s:e]),
        "on_header_end": header_end,
        "on_part_data": lambda d, s, e: current["chunks"].append(bytes(d[s:e])),
        "on_part_end": end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # refuses absurd boundaries
        parser.write(body)
    except FormProblem:
        raise
    except Exception as exc:  # python-multipart's parse errors: the client's fault
        raise FormProblem(400, f"could not parse the multipart body: {str(exc)[:200]}") from None
    if parser.state != MultipartState.END:
        raise FormProblem(400, "the multipart body is truncated (no closing boundary)")
    return parts


def upload_from_parts(parts: list[Part], max_images: int) -> Upload:
    """Files by field (``frontal``, ``lateral``, ``image``) and the indication, checked."""
    upload = Upload()
    for field_name, hint in FILE_FIELDS:
        for part in parts:
            if part.name != field_name:
                continue
            if part.filename is None:
                raise FormProblem(400, f"field {field_name!r} must be a file upload, not text")
            upload.files.append((part.data, hint))
    texts = [p for p in parts if p.name == "indication"]
    if texts:
        if texts[0].filename is not None:
            raise FormProblem(400, "field 'indication' must be text")
        upload.indication = texts[0].data.decode("utf-8", "replace")
    if not upload.files:
        raise FormProblem(400, "no image: send a file in the 'image' field (or 'frontal' and 'lateral')")
    if len(upload.files) > max_images:
        raise FormProblem(400, f"at most {max_images} images per study (a frontal and a lateral)")
    if any(len(data) == 0 for data, _ in upload.files):
        raise FormProblem(400, "an uploaded file is empty")
    return upload
