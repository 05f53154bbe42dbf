"""CLIP for radiographs: contrastive image-report pretraining, zero-shot and supervised classification,
and image -> report retrieval.

Modules: ``image_encoders`` / ``text_encoders`` (towers by name), ``model`` (family ``clip``),
``zeroshot`` (prompt-pair classification, prompts in ``prompts.json``), ``classifier`` (family
``classifier``: linear probe / fine-tune head), ``retrieval`` (nearest training report),
``data`` (datasets), ``task`` / ``classifier_task`` (``crrg train clip`` / ``crrg train classifier``).
Heavy imports stay in the submodules so importing :mod:`crrg.clip` is cheap.
"""
