"""The model compiler: int8 .tflite -> the firmware runtime's model image."""

from tinymlops.device.image.compiler import Compiled, ModelImage, TensorInfo, compile_model, describe

__all__ = ["Compiled", "ModelImage", "TensorInfo", "compile_model", "describe"]
