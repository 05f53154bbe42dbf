"""HTTP service (FastAPI) and web viewer for report generation: ``crrg serve``."""
