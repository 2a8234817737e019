"""``TURNWISE_SIDECAR_*`` settings (pydantic-settings); Redis, key prefix and bundle are the service's own."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from turnwise.names import DEFAULT_KEY_PREFIX


class SidecarSettings(BaseSettings):
    """``TURNWISE_SIDECAR_*`` settings; Redis, key prefix and bundle are the service's own variables."""

    model_config = SettingsConfigDict(env_prefix="TURNWISE_SIDECAR_", extra="ignore", populate_by_name=True)

    # --- shared with the service (same environment in the chart) ---------------------------------
    redis_url: str | None = Field(None, validation_alias="TURNWISE_REDIS_URL", description="Redis URL.")
    key_prefix: str = Field(DEFAULT_KEY_PREFIX, validation_alias="TURNWISE_KEY_PREFIX",
                            description="Redis key prefix.")
    bundle: Path | None = Field(
        None,
        validation_alias="TURNWISE_BUNDLE",
        description="The served bundle: a symlink (e.g. /models/current) to <root>/<version>/; new versions "
        "are written to <root> and the link is re-pointed.",
    )

    # --- consuming -------------------------------------------------------------------------------
    state_dir: Path | None = Field(None, description="Ledger + checkpoints (default <bundle root>/.sidecar).")
    work_dir: Path | None = Field(
        None, description="Scratch space for a finetune (the chart's /scratch); default <state_dir>/work."
    )
    group: str = Field("turnwise-trainer", description="Consumer group on the feedback stream.")
    consumer: str = Field("trainer", description="Consumer name (one trainer per release: keep it fixed).")
    batch: int = Field(200, ge=1, description="Stream entries read per XREADGROUP.")
    block_ms: int = Field(5000, ge=0, description="How long one XREADGROUP waits for new feedback.")
    claim_idle_s: float = Field(300.0, ge=0, description="Claim entries another consumer left pending this long.")
    redis_timeout_s: float = Field(5.0, gt=0, description="Redis connect timeout (reads allow block_ms more).")

    # --- when and how to finetune ----------------------------------------------------------------
    min_new_labels: int = Field(200, ge=1, description="New joined gold labels that trigger a finetune.")
    cooldown_s: float = Field(60.0, ge=0, description="Least seconds between two finetune attempts.")
    checkpoint: Path | None = Field(None, description="PyTorch checkpoint of the seed bundle (see sidecar.loop).")
    heldout: Path | None = Field(None, description="Held-out gold dialogues (JSONL); default: a feedback slice.")
    heldout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of feedback dialogues (by a hash of dialogue_id) held out."
    )
    min_heldout_labels: int = Field(30, ge=1, description="Fewer held-out labels than this: never publish.")
    max_regression: float = Field(0.0, ge=0, description="Publish if candidate >= serving - this (score in [0,1]).")
    max_train_examples: int = Field(50_000, ge=1, description="Most recent labelled turns used for training.")
    epochs: int = Field(3, ge=1, description="Finetuning epochs over the feedback.")
    batch_size: int = Field(16, ge=1)
    # Small steps: the serving model is already trained; a few hundred corrections must not erase it.
    lr: float = Field(2e-5, gt=0, description="Encoder learning rate.")
    head_lr: float = Field(1e-4, gt=0, description="Head learning rate (the heads are trained already).")
    max_steps: int | None = Field(500, ge=1, description="Cap on finetuning steps per attempt.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="As in turnwise train.")
    seed: int = 0
    variants: str = Field("", description="Variants to export (comma-separated); empty = the serving bundle's.")
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept besides the serving one.")
