"""The model layer: the one factory that builds the model from settings, and its warm-up at start-up.

The model is our `FinishChunkLitellmModel` (`litellm_model.py`: LiteLLM, each streamed call ended at the provider's
finish) on the configured provider, or, without a provider key, the example team's offline demo model
(`backend.team.offline`), so the first run works with no configuration at all.
"""

from __future__ import annotations

import asyncio
import logging
import time

import litellm
from agents import Agent, Model, ModelSettings, RunConfig, Runner, retry_policies
from agents.extensions.models.litellm_model import LitellmModel
from agents.retry import ModelRetrySettings

from backend.chat.litellm_guard import GuardedLitellmModel, TruncatedStreamError
from backend.chat.litellm_model import FinishChunkLitellmModel
from backend.chat.titles import LitellmTitles, TitleModel
from backend.settings import Settings
from backend.team.offline import OfflineModel, OfflineTitles

__all__ = [
    "FinishChunkLitellmModel",
    "GuardedLitellmModel",
    "TruncatedStreamError",
    "build_model",
    "build_title_model",
    "warm_up",
]

log = logging.getLogger(__name__)

litellm.suppress_debug_info = True  # LiteLLM otherwise print()s "Give Feedback / Get Help" on every error
# LiteLLM logs every request at INFO, including model details; keep our INFO log about our own events.
logging.getLogger("LiteLLM").setLevel(logging.WARNING)

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)


def build_model(settings: Settings) -> tuple[Model, ModelSettings]:
    """Build the model and its settings.

    Args:
        settings: Application settings: model string, key, base URL, timeouts, retries.

    Returns:
        The model, and settings that retry 429/5xx before the first token. `MODEL_USAGE_SOURCE` picks the model:
        ours, taking each call's usage from LiteLLM's finish chunk (`finish_chunk`, the default) or from its usage
        chunk (`usage_chunk`), or the SDK's `LitellmModel` with the truncated-stream guard (`litellm_model`).
    """
    source = settings.model_usage_source
    model_settings = ModelSettings(
        # Without `stream_options` (None) LiteLLM still reports the provider's usage, on its finish chunk.
        include_usage=None if source == "finish_chunk" else True,
        # LiteLLM's own HTTP timeout rather than `ModelSettings.timeout`: the SDK enforces that one by moving every
        # model stream into an extra task and handing each event across two queues, a measurable per-chunk cost.
        extra_args={"timeout": settings.model_timeout_seconds},
        retry=ModelRetrySettings(
            max_retries=settings.model_retries,
            backoff={"initial_delay": 0.5, "max_delay": 4.0, "multiplier": 2.0, "jitter": True},
            policy=retry_policies.any(retry_policies.http_status(RETRY_STATUSES), retry_policies.network_error()),
        ),
    )
    if settings.use_offline_model:
        return OfflineModel(), model_settings
    model: LitellmModel
    if source == "litellm_model":
        model = GuardedLitellmModel(settings.model, base_url=settings.gemini_api_base, api_key=settings.gemini_api_key)
    else:
        model = FinishChunkLitellmModel(
            settings.model, base_url=settings.gemini_api_base, api_key=settings.gemini_api_key, usage_source=source
        )
    return model, model_settings


def build_title_model(settings: Settings) -> TitleModel | None:
    """What names new conversations.

    None with `TITLES=off`, the offline demo's titles without a provider key, else `TITLE_MODEL` (default `MODEL`)
    through LiteLLM with the chat's key and base URL.
    """
    if not settings.titles:
        return None
    if settings.use_offline_model:
        return OfflineTitles()
    return LitellmTitles(
        settings.title_model or settings.model,
        api_key=settings.gemini_api_key,
        api_base=settings.gemini_api_base,
        timeout_seconds=settings.title_timeout_seconds,
    )


WARM_UP_REPLY = "warm"
WARM_UP_SECONDS = 30.0


async def warm_up(model: Model, model_settings: ModelSettings) -> bool:
    """Run one streamed model turn at start-up, without calling the provider, so the first user's turn is not slow.

    The first LiteLLM call of a process imports about 125 modules and builds their tables (LiteLLM loads providers,
    its HTTP stack and cost tables lazily): ~0.6 s of CPU that would otherwise hold the event loop, and every stream
    of the worker, at the first turn after each start. LiteLLM's documented `mock_response` answers without any
    network call while going through the same call setup, stream wrapper, usage and cost code, and the Agents SDK's
    run loop runs as for a real turn.

    Args:
        model: The model from `build_model`; the offline demo model needs no warm-up.
        model_settings: Its settings (the warm-up adds `mock_response`).

    Returns:
        Whether the warm-up turn completed (a failure is logged and changes nothing else).
    """
    if not isinstance(model, LitellmModel):
        return False
    mocked = model_settings.resolve(ModelSettings(extra_args={"mock_response": WARM_UP_REPLY}))
    agent = Agent(name="warm-up", instructions="Reply briefly.", model=model, model_settings=mocked)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(WARM_UP_SECONDS):
            result = Runner.run_streamed(agent, "warm up", run_config=RunConfig(tracing_disabled=True))
            async for _event in result.stream_events():
                pass
    except Exception as error:
        log.warning("model warm-up failed (%s); the first turn will be slower", type(error).__name__)
        return False
    log.info("model path warmed up in %.0f ms", (time.perf_counter() - started) * 1000)
    return bool(result.final_output == WARM_UP_REPLY)
