"""Which HTTP status a user error becomes: chosen by the error's class, never by its message text.

The most specific class wins (the table is ordered); any other :class:`crrg.errors.CrrgError` is
the client's fault and a 400. Errors that are not ``CrrgError`` are bugs: 500, without details.
"""

from __future__ import annotations

from crrg.errors import CrrgError, ImageError, InputError
from crrg.generation import GenerationError
from crrg.image.gate import GateError
from crrg.serve.inputs import UnsupportedModality

STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (UnsupportedModality, 415),  # a DICOM of another modality (CT, MR, US...)
    (GateError, 422),  # decodes, but is not a chest radiograph
    (GenerationError, 422),  # a decoding option the generator cannot honour
    (ImageError, 400),
    (InputError, 400),
    (CrrgError, 400),
)


def http_status(exc: BaseException) -> int:
    """The status of a user error (400 when no more specific class is listed)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400
