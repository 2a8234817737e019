"""Service settings: one pydantic-settings class, every field read from a ``TURNWISE_*`` env var.

Example::

    TURNWISE_BUNDLE=bundles/current TURNWISE_REDIS_URL=redis://localhost:6379/0 \\
    TURNWISE_API_KEYS=key-a,key-b turnwise serve --port 8080
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TURNWISE_", extra="ignore")

    # --- model ---------------------------------------------------------------------------------
    bundle: Path | None = Field(
        None,
        description="Model bundle directory (holds bundle.json). May be a symlink: point it at a new "
        "version (atomic `ln -sfn`) and the service hot-reloads it.",
    )
    variant: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto", description="Bundle variant to serve; auto = the loader's best choice for the providers."
    )
    providers: Literal["cpu", "cuda", "tensorrt"] = Field("cpu", description="ONNX Runtime execution providers.")
    intra_op_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime intra-op threads (default: the loader's choice, one per core)."
    )
    intra_op_spinning: bool = Field(
        True,
        description="Let idle ONNX Runtime intra-op threads busy-wait for the next call (its default): a little "
        "faster per call, but CPU taken from the event loop and the store client on a small machine.",
    )
    reload_poll_s: float = Field(
        2.0,
        ge=0,
        description="Seconds between checks of bundle.json for a new version; 0 disables polling "
        "(POST /v1/admin/reload still works).",
    )

    # --- store ---------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="Redis URL for the window store; unset = embedded in-process store (one replica only).",
    )
    key_prefix: str = Field("tw:", description="Prefix of every Redis key: <prefix>{<dialogue_id>}:turns ...")
    window_ttl_s: int = Field(7200, ge=1, description="TTL of a dialogue's window, refreshed by every write.")
    redis_timeout_s: float = Field(
        0.5, gt=0, description="Redis connect/read timeout; a store that does not answer in time is a 503."
    )
    feedback_maxlen: int = Field(
        1_000_000, ge=1, description="Approximate MAXLEN of the feedback stream (<prefix>feedback)."
    )

    # --- alerts and events ---------------------------------------------------------------------
    rules: Path | None = Field(
        None,
        description="YAML file of alert rules evaluated on every scored turn (conditions on labels, "
        "probabilities, speaker, runs of turns, rolling means; severity; cool-down); unset = no alerts. "
        "Checked at start: a mistake stops the service with the file, rule and field named.",
    )
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated URLs that receive every alert as a JSON POST, signed with "
        "X-Turnwise-Signature: sha256=<HMAC-SHA256 of the body with TURNWISE_WEBHOOK_SECRET>; retried with "
        "backoff, never delaying a turn's answer.",
    )
    webhook_secret: SecretStr | None = Field(None, description="The HMAC-SHA256 key of webhook signatures.")
    webhook_attempts: int = Field(5, ge=1, le=20, description="Delivery attempts per alert and webhook URL.")
    events_maxlen: int = Field(
        100_000, ge=1, description="Approximate MAXLEN of the alert/ended event stream (<prefix>events)."
    )
    turn_events_maxlen: int = Field(
        10_000, ge=1, description="Approximate MAXLEN of the scored-turn event stream (<prefix>turn-events)."
    )
    trend_task: str = Field(
        "sentiment",
        description="Task whose P(positive) - P(negative) is a call's sentiment trend (GET /v1/dialogues/{id}).",
    )

    # --- batching and limits -------------------------------------------------------------------
    # CPU defaults: a batched CPU forward is barely faster per window than one at a time (measured on
    # MiniLM, 2 cores: ~5%), while every window of a batch waits for the whole batch. On a GPU raise
    # MAX_BATCH_SIZE (32-64) and MAX_BATCH_WAIT_MS (1-5).
    max_batch_size: int = Field(8, ge=1, description="Largest batch sent to the model.")
    max_batch_tokens: int = Field(
        8192, ge=1, description="Largest padded batch (batch size x longest sequence) sent to the model."
    )
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="How long the batcher waits for more requests after the first one of a "
        "batch when the model is idle; while a batch runs the next one fills up anyway.",
    )
    batch_padding_waste: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A batch runs as several model calls over groups of similar length, each padding at most "
        "this fraction of its tokens (on CPU padded tokens cost as much as real ones); 1 = one padded call.",
    )
    state_cache_mb: float = Field(
        512.0,
        gt=0,
        description="Streaming bundles: memory for the cached keys/values of live calls (LRU, in MiB). A call "
        "whose state was evicted is rebuilt from its stored window in one pass, with the same scores.",
    )
    stream_batch_size: int = Field(
        8,
        ge=1,
        description="Streaming bundles: most incremental steps of different calls in one model call, grouped by "
        "cached length (caches padded to the longest and masked); 1 = one call per step. MiniLM on 2 CPU "
        "cores, 20-token steps over 150-260 cached tokens: 5.3-5.5 ms a step in groups of 2-8, 6.4-6.7 alone.",
    )
    max_queue: int = Field(
        256,
        ge=1,
        description="Hard cap on requests inside the serving path at once; beyond it answer 429 (admission is "
        "by predicted wait first, see TURNWISE_LATENCY_BUDGET_MS).",
    )
    latency_budget_ms: float = Field(
        1000.0,
        gt=0,
        description="Per-request deadline. Admission: a request whose predicted wait (requests ahead x the measured "
        "model time per request) exceeds it is answered 429 at once; one still queued when it passes is answered "
        "504 and never computed; every store call ends within it (503).",
    )
    max_text_chars: int = Field(2000, ge=1, description="Longest utterance accepted (413 above).")
    max_turns_per_request: int = Field(64, ge=1, description="Most turns in one POST /v1/score body (413 above).")
    max_body_bytes: int = Field(262_144, ge=1024, description="Largest HTTP request body (413 above).")
    max_frame_bytes: int = Field(65_536, ge=1024, description="Largest WebSocket frame (error frame above).")
    retry_after_s: int = Field(
        1,
        ge=1,
        description="Retry-After seconds sent with 503 answers and 429s beyond TURNWISE_MAX_QUEUE (a 429 refused "
        "by predicted wait carries the predicted time instead).",
    )

    # --- security and logging ------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys (Authorization: Bearer <key>); empty = auth off (a warning "
        "is logged at start).",
    )
    log_text: bool = Field(
        False,
        description="Log utterance text (off by default: text is never logged, not even by the WebSocket "
        "library's debug log of frames, which is silenced unless this is on).",
    )
    log_level: str = Field("info", description="Log level of the turnwise.service loggers.")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="json: one JSON object per line with request_id and dialogue_id (and trace ids when tracing); "
        "text: one readable line.",
    )
    access_log: bool = Field(False, description="uvicorn access log (paths only, never bodies).")

    # --- tracing -------------------------------------------------------------------------------
    otlp_endpoint: str | None = Field(
        None,
        description="OpenTelemetry collector base URL for OTLP/HTTP traces (e.g. http://otel-collector:4318; "
        "/v1/traces is appended); unset = tracing off. Needs the otel extra (pip install turnwise[otel]). "
        "OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES are honoured.",
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Fraction of root traces sampled (a caller's sampled traceparent is always followed).",
    )

    # --- server --------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address of `turnwise serve`.")
    port: int = Field(8080, ge=0, le=65535, description="Port of `turnwise serve`.")
    shutdown_grace_s: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM, how long in-flight requests and WebSocket replies may take (at most "
        "TURNWISE_DRAIN_S).",
    )
    drain_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, the hard bound from the signal to exit: streams drained, in-flight requests "
        "answered, the batcher finished, the store closed; whatever still runs then is cancelled and the "
        "process exits. Keep it below the orchestrator's grace period (Kubernetes: 30 s).",
    )
    keep_alive_s: float = Field(
        65.0,
        gt=0,
        description="Idle HTTP keep-alive timeout; longer than a load balancer's idle timeout (often 60 s) "
        "so it never reuses a connection the server is closing.",
    )

    @field_validator("api_keys", "webhook_urls", mode="before")
    @classmethod
    def _split_keys(cls, v: object) -> object:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)
