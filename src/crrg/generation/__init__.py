"""The generation layer: load a report generator, choose its device, decode with typed options.

>>> from crrg.generation import load_generator
>>> engine = load_generator(device="auto")          # the bundled crrg-default
>>> report = engine.generate(study, {"beams": 4})   # a crrg.reporting.GeneratedReport

Every user-fixable failure is a :class:`GenerationError`. See :mod:`crrg.generation.options` for the
decoding options (and :func:`options_from_query` for HTTP query parameters) and
:mod:`crrg.generation.device` for the device rule.
"""

from crrg.generation.device import resolve_device, resolve_dtype
from crrg.generation.engine import ReportEngine, default_decoding, load_generator
from crrg.generation.options import (DECODING_FILE, DecodingOptions, GenerationError, ImpressionPolicy, JointMode,
                                     options_from_query)

__all__ = ["DECODING_FILE", "DecodingOptions", "GenerationError", "ImpressionPolicy", "JointMode", "ReportEngine",
           "default_decoding", "load_generator", "options_from_query", "resolve_device", "resolve_dtype"]
