"""One typed settings object for every process, read from ``CAIMX_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "model" / "zoo"


class Settings(BaseSettings):
    """Configuration of the API, the workers and the offline CLI.

    Every field can be set as an environment variable with the ``CAIMX_`` prefix, e.g.
    ``CAIMX_DATA_DIR=/srv/caimx``.
    """

    model_config = SettingsConfigDict(env_prefix="CAIMX_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./var"),
        description="Where uploads, job results and the embedded Redis live.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for broker and job store. Unset: `caimx serve` starts a private one.",
    )
    models_dir: Path = Field(
        default=REPO_MODELS_DIR,
        description="Folder of installed models, one sub-folder per model name.",
    )
    default_model: str = Field(
        default="caimx-mini", description="Model used when a job names none."
    )
    max_upload_bytes: int = Field(
        default=64 * 1024**3, gt=0, description="Largest accepted upload."
    )
    tile_size: int | None = Field(
        default=None,
        gt=0,
        description="Spatial tile edge in pixels; default: the model's patch size.",
    )
    tile_overlap: int = Field(default=4, ge=0, description="Pixels shared by neighbouring tiles.")
    window_overlap: int = Field(
        default=20, ge=4, description="Frames shared by neighbouring windows."
    )
    batch_size: int = Field(
        default=16, gt=0,
        description="Patches per network call; unset, a worker whose model runs on a GPU takes "
                    "256 (128 for the SavedModel).",
    )
    model_runtime: Literal["savedmodel", "keras"] = Field(
        default="savedmodel",
        description=(
            "How workers run a model: its TensorFlow SavedModel, or its Keras weights on the "
            "active Keras backend (set KERAS_BACKEND=jax to use a GPU through JAX)."
        ),
    )
    read_ahead: int = Field(
        default=1, ge=0, le=64,
        description="Chunks read and motion-corrected in threads while the network runs, "
                    "when one process runs a whole movie or a task runs several chunks; unset, a "
                    "GPU worker takes cores - 4 (2 to 12).",
    )
    candidate_threads: int = Field(
        default=1, ge=1, le=64,
        description="Threads that turn the network's outputs into candidates while it runs, "
                    "when one process runs a whole movie or a task runs several chunks; unset, a "
                    "GPU worker takes cores / 4 (1 to 4).",
    )
    batches_in_flight: int = Field(
        default=1, ge=0, le=8,
        description="Network batches left running while the outputs of an earlier one are "
                    "collected, with a runtime that computes asynchronously (the Keras runtime "
                    "on JAX); 0: each batch collected at once.",
    )
    deconvolve_processes: int = Field(
        default=0, ge=0, le=64,
        description="Processes that fit the calcium traces (OASIS) of a movie with a million "
                    "trace samples or more; 0: one per core, at most 8; 1: only the process "
                    "that runs the engine.",
    )
    malloc_arena_max: int = Field(
        default=2, ge=0, le=64,
        description="glibc malloc arenas of a process that runs the engine (caimx process, "
                    "workers); 2 keeps the memory freed by the engine's threads from piling up "
                    "per thread (peak RSS); 0 leaves glibc's default (8 per core). "
                    "MALLOC_ARENA_MAX in the environment wins.",
    )
    worker_concurrency: int = Field(
        default=1, gt=0, description="Celery worker processes per host."
    )
    api_workers: int = Field(
        default=1, gt=0, le=64,
        description=(
            "API processes of `caimx serve` (uvicorn workers). The API keeps no state of its "
            "own, so 2-4 on a shared server keep status latency low while uploads run."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    port: int = Field(default=8000, gt=0, lt=65536, description="Port the API listens on.")
    task_time_limit_s: int = Field(default=6 * 3600, gt=0, description="Hard limit of one task.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as plain text or as one JSON object each."
    )
    log_level: str = Field(default="INFO", description="Lowest level logged (DEBUG, INFO, ...).")
    tiles_per_chunk: int | None = Field(
        default=None,
        gt=0,
        description="Tiles in one chunk task; default: every tile of a temporal window.",
    )
    chunks_per_task: int = Field(
        default=1, ge=1, le=1024,
        description=(
            "Consecutive chunks one GPU task runs as a pipeline (reading ahead in read_ahead "
            "threads, full network batches across chunk borders, candidates on their own "
            "thread). 1 spreads a job widest over many workers; a GPU worker runs far faster "
            "with 8-32 (each chunk is still counted, retried and resumed on its own)."
        ),
    )
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "Folders on shared storage that jobs may reference by path, as a JSON list "
            '(CAIMX_ALLOWED_ROOTS=\'["/srv/rigs"]\'). Empty: referenced movies are refused.'
        ),
    )
    remote_allowed_prefixes: list[str] = Field(
        default_factory=list,
        description=(
            "fsspec URLs that jobs may name as `source.url`, as a JSON list of prefixes "
            '(CAIMX_REMOTE_ALLOWED_PREFIXES=\'["s3://lab-rigs/", "https://data.lab.org/mov/"]\'); '
            "a prefix matches whole path segments. Empty: URLs are refused. Needs "
            "`pip install caimx[remote]` for s3://."
        ),
    )
    remote_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "fsspec options per URL protocol, as JSON (CAIMX_REMOTE_OPTIONS="
            '\'{"s3": {"endpoint_url": "https://minio.lab.org"}}\'). Never credentials: they come '
            "from the environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS)."
        ),
    )
    result_retention_hours: float = Field(
        default=30 * 24, gt=0, description="Results of finished jobs are removed after this."
    )
    upload_retention_hours: float = Field(
        default=7 * 24,
        gt=0,
        description="Resumable uploads untouched this long are removed (unless a job uses them).",
    )
    cleanup_interval_s: int = Field(
        default=3600, gt=0, description="How often the API queues the cleanup task."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret that signs job webhooks (HMAC-SHA256); unset: no webhooks.",
    )
    webhook_max_retries: int = Field(default=6, ge=0, description="Retries of a failed webhook.")
    webhook_backoff_s: float = Field(
        default=2.0, gt=0, description="First retry delay of a webhook; doubles on each retry."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one webhook call.")
    auth_enabled: bool = Field(
        default=True,
        description=(
            "Require 'Authorization: Bearer KEY' (keys from `caimx users add`). Off is allowed "
            "only when the API listens on 127.0.0.1 (single-user `caimx serve`)."
        ),
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed to call the API, as a JSON list; empty: CORS off.',
    )
    max_active_jobs_per_user: int = Field(
        default=20, ge=0, description="Queued + running jobs one user may have; 0: no limit."
    )
    max_upload_bytes_per_day: int = Field(
        default=2 * 1024**4, ge=0, description="Bytes one user may upload per UTC day; 0: no limit."
    )
    storage_quota_bytes: int = Field(
        default=10 * 1024**4, ge=0,
        description="Uploads + results one user may keep; 0: no limit.",
    )
    max_attempts: int = Field(
        default=3, gt=0,
        description=(
            "Deliveries of one task (prepare, a chunk, finalize) before its job fails: a movie "
            "that kills its worker every time fails after this many tries."
        ),
    )
    visibility_timeout_s: int = Field(
        default=3600, gt=0,
        description=(
            "Seconds after which the broker hands an unacknowledged task (its worker died) to "
            "another worker. Must exceed the longest chunk or finalize task."
        ),
    )

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("allowed_roots")
    @classmethod
    def _absolute_roots(cls, values: list[Path]) -> list[Path]:
        return [Path(v).expanduser().resolve() for v in values]

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        return [v.rstrip("/") for v in values]

    @property
    def loopback_only(self) -> bool:
        """The API listens on the loopback interface only."""
        return self.host in ("127.0.0.1", "localhost", "::1")

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def resumable_dir(self) -> Path:
        """Bytes of resumable (tus) uploads, one file per upload."""
        return self.uploads_dir / "resumable"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use (never at import)."""
    return Settings()
