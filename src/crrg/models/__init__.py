"""Models are data, looked up by name: see :mod:`crrg.models.registry`."""

from crrg.models.registry import create_model, get_model_config, list_models, load_pretrained, save_pretrained

__all__ = ["create_model", "get_model_config", "list_models", "load_pretrained", "save_pretrained"]
