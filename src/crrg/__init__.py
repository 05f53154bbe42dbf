"""crrg: chest radiograph report generation and classification.

The package is laid out by modality so the tree reads like the architecture:
``data`` (readers -> one record format), ``image`` and ``text`` (input contracts),
``labeler`` and ``evaluation`` (how reports are judged), ``training`` (one engine),
``synth`` (synthetic radiographs with ground truth), ``models`` (registry) with the model
families ``clip``, ``rrg`` and ``blip``, and ``serve`` (HTTP service).
"""

__version__ = "0.1.0"
