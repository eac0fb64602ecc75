"""Keras 3 models: backbones, pooling and heads, losses, saving, the TFLite runtime, embedders."""
