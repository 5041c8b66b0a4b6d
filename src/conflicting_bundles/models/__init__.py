"""Model families of docs/method.md §3 behind a timm-like registry: "fnn", "plain", "resnet".

Every model is a :class:`BlockNet`: ``probe_points(kind)``, ``block_names()``, ``block_info()``,
``lesioned(indices)``, ``without_blocks(indices)``, ``arch()`` (see ARCHITECTURE.md).
"""

from .base import MAX_PARAMETERS, BlockNet, check_size
from .convnet import (
    BLOCKS_FOR_LAYERS,
    ConvBlock,
    ConvNet,
    ConvNetConfig,
    blocks_for_layers,
    plain,
    resnet,
    scaled_branch,
)
from .fnn import FNN, FNNConfig, fnn
from .registry import check_model_kwargs, create_model, list_models, model_signature, register_model

__all__ = [
    "BLOCKS_FOR_LAYERS",
    "MAX_PARAMETERS",
    "FNN",
    "BlockNet",
    "ConvBlock",
    "ConvNet",
    "ConvNetConfig",
    "FNNConfig",
    "blocks_for_layers",
    "check_model_kwargs",
    "check_size",
    "create_model",
    "fnn",
    "list_models",
    "model_signature",
    "plain",
    "register_model",
    "resnet",
    "scaled_branch",
]
