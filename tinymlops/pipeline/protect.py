"""The watermark stage over files: the trained model in, the owner-watermarked model out.

The Prefect flow (tasks/protect.py, cached on its inputs) and `dvc repro` (dvc.yaml stage
`watermark`, through `tinymlops protect`) call this one function, so both ship the same bytes.
The owner key is read from its file outside git (configs/watermark.yaml key_file under
TINYMLOPS_HOME); a fresh machine gets a development key there, as in the flow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from tinymlops.ml.data.split import load_split
from tinymlops.ml.model import train as training
from tinymlops.ml.model.train import EpochCallback
from tinymlops.ml.watermark import OwnerKey, WatermarkConfig, WatermarkRefused, ensure_dev_key
from tinymlops.settings import PipelineParams
from tinymlops.util.io import write_json
from tinymlops.util.layout import TRAIN_REPORT

EMBED_REPORT = "watermark_embed.json"  # the accepted attempt's EmbedReport
PLAN_REPORT = "watermark_plan.json"  # the AdaptiveReport: every plan tried, accepted or refused
WATERMARKED_DIR = "models/watermarked"
log = logging.getLogger(__name__)


def owner_key(home: Path, config: WatermarkConfig) -> tuple[OwnerKey, bool]:
    """→ (the owner key, whether it was created just now)."""
    return ensure_dev_key(config.key_path(home), config.dev_owner_id, config.dev_serial)


def key_digest(key: OwnerKey) -> str:
    """The key's sha256: part of cache keys, never the key itself."""
    return hashlib.sha256(key.secret.get_secret_value()).hexdigest()


def embed_watermark(
    params: PipelineParams,
    prepared_dir: Path,
    model_dir: Path,
    out_dir: Path,
    key: OwnerKey,
    config: WatermarkConfig,
    on_epoch: EpochCallback | None = None,
) -> Path:
    """Fine-tune the model in `model_dir` with the key's triggers, on a plan fitted to the data
    (tinymlops.ml.watermark.adaptive); write it, its train report, the plan report and the embed
    report into `out_dir` (a fresh directory: the callers make it atomic).

    No plan keeps accuracy and a meaningful owner test: WatermarkError with the one-line reason,
    or, with `on_refusal: ship_unmarked`, the unmarked model and the refusal in the plan report."""
    from tinymlops.ml.watermark.adaptive import embed_adaptive

    splits = (load_split(prepared_dir, "train"), load_split(prepared_dir, "val"))
    unmarked = training.load(model_dir)
    marked, report = embed_adaptive(unmarked, *splits, key, config, params.seed, on_epoch)
    if marked is None and config.on_refusal == "fail":
        raise WatermarkRefused(report.reason, report.model_dump(mode="json"))
    write_json(out_dir / PLAN_REPORT, report.model_dump(mode="json"))
    if marked is None:
        log.warning("SHIPPING UNMARKED (watermark.yaml on_refusal: ship_unmarked): %s", report.reason)
        training.save(unmarked, out_dir)
    else:
        training.save(marked, out_dir)
        write_json(out_dir / EMBED_REPORT, report.embed.model_dump(mode="json") if report.embed else {})
    shutil.copyfile(Path(model_dir) / TRAIN_REPORT, out_dir / TRAIN_REPORT)
    return out_dir


def read_plan(marked_dir: Path) -> dict | None:
    """The plan report beside a watermark stage's model (None: a model from before plans)."""
    path = Path(marked_dir) / PLAN_REPORT
    return json.loads(path.read_text()) if path.is_file() else None


def checked_config(config: WatermarkConfig, marked_dir: Path) -> WatermarkConfig:
    """`config`, verifying the trigger prefix the stage's plan marked."""
    plan = read_plan(marked_dir)
    if plan is None or plan["chosen"] is None:
        return config
    return config.with_plan(plan["attempts"][plan["chosen"]]["plan"]["n_triggers"])


def refusal(marked_dir: Path) -> str | None:
    """The refusal's reason when the stage shipped the model unmarked, else None."""
    plan = read_plan(marked_dir)
    return None if plan is None or plan["accepted"] else str(plan["reason"])
