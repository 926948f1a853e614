"""Models: open_clip architectures by name, shipped tiny configs, safe checkpoint I/O."""
from .checkpoint import EXPORT_FORMATS, export_model, load_model, read_meta, read_state_dict, save_model
from .factory import ClipBundle, create_model, list_models, model_config, shipped_models

__all__ = [
    "EXPORT_FORMATS", "export_model", "ClipBundle", "create_model", "list_models", "load_model", "model_config", "read_meta",
    "read_state_dict", "save_model", "shipped_models",
]
