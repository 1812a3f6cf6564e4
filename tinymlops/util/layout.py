"""Where each stage's files live in a project, named once.

Light on purpose (no TensorFlow): the tracker, the CLI and the stages all refer to these names.
`dvc repro` keeps stage outputs in these directories; the flow keeps models in its cache.
"""

from pathlib import Path

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
MODEL_DIR = Path("models/keras")
TFLITE_DIR = Path("models/tflite")
REPORT_DIR = Path("reports")

SPLIT_META_FILE = "meta.json"
VALIDATION_FILE = "validation.json"
KERAS_MODEL_FILE = "model.keras"
TRAIN_REPORT = "train.json"
TRAINING_CURVES = "training_curves.png"
FLOAT_TFLITE = "model_float.tflite"
INT8_TFLITE = "model_int8.tflite"
QUANT_REPORT = "quantization.json"
EVAL_REPORT = "evaluation.json"
METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"
