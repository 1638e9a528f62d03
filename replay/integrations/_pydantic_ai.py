"""pydantic-ai durable execution on the journal: each model request and tool call is a step.

pydantic-ai's durable-execution base (`BaseDurabilityCapability`, a callable operation backend,
`JSON_CODEC`) cuts a run into units (model requests, tool calls, tool discovery, event-handler
calls); the backend here makes each unit one journal step. Design choices, and why:

* Keys ignore pydantic-ai's tasks: it runs tool calls, and a timing-dependent number of helper
  tasks beside them, in tasks of its own, so task paths differ between sittings. An agent run
  takes one key in the task that starts it (`0:3`); its model requests, one at a time, are
  `0:3:1`, `0:3:2`, ...; a tool call's units are keyed by the `tool_call_id` in the journaled
  response that asked for it (`0:3/call_abc:1`); other units by operation (`0:3/<op>:1`).
* A fingerprint covers the unit's canonical parameters minus timestamps, run and conversation
  ids (fresh each sitting). A model request stores its newest message in full and the earlier
  history as a count and digest: the journal grows linearly with the conversation.
* The default `run_id` and `conversation_id` derive from the journal run and that first key.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import orjson
from pydantic_ai.agent import EventStreamHandler
from pydantic_ai.agent.abstract import AbstractAgent
from pydantic_ai.capabilities.abstract import AbstractCapability, WrapRunHandler
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    CallableOperationBackend,
    DurabilityEngineSpec,
    DurableOperationId,
    JournalOperationNamer,
    ModelCancelSuspendedResponseId,
    ModelCompactMessagesId,
    ModelRequestId,
    RoleBasedOperationConfig,
    ToolsetCallToolId,
    ToolsetGetInstructionsId,
    ToolsetGetToolsId,
    ToolsetValidateToolArgumentsId,
    conversation_id_from_run_id,
    record_durable_unit,
    replay_scope,
)
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import AgentStreamEvent, ModelMessagesTypeAdapter
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import AgentDepsT, RunContext
from pydantic_core import to_jsonable_python

from journal import EventKind, EventStatus, RecordedError, canonical_json, fingerprint

from .._context import TaskScope, current_scope, live_step_key
from .._errors import NotJournalable
from .._history import Turn
from .._session import LivePlan, Session, rebuild_error
from .._steps import as_replayed_error, step_stopped
from ._llm import usage_summary

if TYPE_CHECKING:
    from .._steps import StepSpec

_VOLATILE = frozenset({"timestamp", "run_id", "conversation_id"})
"""Fields left out of fingerprints: pydantic-ai fills them from the clock or fresh ids."""
_NO_SITE = 1 << 20
"""A frame depth past any stack, so no call site is recorded: a unit runs in a task pydantic-ai
created, and no frame on it says where the agent was called."""
_MODEL_UNITS = (ModelRequestId, ModelCompactMessagesId, ModelCancelSuspendedResponseId)
_TOOL_CALL_UNITS = (ToolsetCallToolId, ToolsetValidateToolArgumentsId)
_TOOL_UNITS = (*_TOOL_CALL_UNITS, ToolsetGetToolsId, ToolsetGetInstructionsId)


@dataclass(frozen=True)
class _UnitStep:
    """What `Session` reads from a step spec: name, kind, where its call site is."""

    name: str
    kind: EventKind
    called_from_library = False
    is_async = True
    """The unit's body was awaited live: the run's ready tasks ran before its outcome came."""


class _Unencodable(Exception):
    """pydantic-ai could not reduce a unit's result to JSON: `NotJournalable`, not a failure."""


@dataclass
class _AgentRuns:
    """One sitting's agent runs: where each is keyed, and how many keys each sequence took."""

    paths: dict[str, str] = field(default_factory=dict)  # pydantic-ai run id -> key path
    taken: Counter[str] = field(default_factory=Counter)  # key path -> keys taken


_agent_runs: weakref.WeakKeyDictionary[Session, _AgentRuns] = weakref.WeakKeyDictionary()
"""Built afresh each sitting, in the same order, so the keys come out the same."""
_dispatching: ContextVar[RunContext[Any] | None] = ContextVar("journal_pai_event", default=None)
"""The run whose event is being handed to the event stream handler (its unit carries none)."""


def _safe(text: str) -> str:
    """`text` usable inside a key, where `:` and `/` are delimiters."""
    return text.replace(":", "_").replace("/", "_")


def _unit_key(scope: TaskScope, operation_id: DurableOperationId, name: str, ctx: Any) -> str:
    """The unit's key under its agent run; see the module docstring for the layout."""
    run_id = getattr(ctx, "run_id", None)
    if run_id is None:
        return scope.next_key()  # no run to key under: the task's own sequence
    runs = _agent_runs.setdefault(scope.session, _AgentRuns())
    # A run_id the caller chose names its run: stable exactly when the caller's choice is.
    path = runs.paths.setdefault(run_id, f"run={_safe(run_id)}")
    if isinstance(operation_id, _TOOL_CALL_UNITS) and ctx.tool_call_id:
        path += "/" + _safe(ctx.tool_call_id)
    elif not isinstance(operation_id, _MODEL_UNITS):  # discovery, events: maybe concurrent
        path += "/" + _safe(name.split("__", 1)[-1])
    runs.taken[path] += 1
    return f"{path}:{runs.taken[path]}"


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def _opaque(obj: object) -> str:
    return f"<{type(obj).__qualname__}>"


def _canonical(value: Any) -> Any:
    """JSON values for `value`; objects that are not data (models, functions) by type name."""
    return _without_volatile(to_jsonable_python(value, fallback=_opaque, bytes_mode="base64"))


def _digest(value: Any) -> str:
    return "blake2b:" + hashlib.blake2b(canonical_json(value), digest_size=12).hexdigest()


def _arguments(operation_id: DurableOperationId, cache_key: tuple[object, ...]) -> Any:
    """What a unit is fingerprinted by and stored with: its parameters, canonical."""
    if isinstance(operation_id, ModelRequestId):
        model_id, messages, settings, parameters = cache_key[:4]
        assert isinstance(messages, list)
        dumped = _without_volatile(ModelMessagesTypeAdapter.dump_python(messages, mode="json"))
        return {
            "model": model_id,
            "request": dumped[-1] if dumped else None,
            "history": f"{max(len(dumped) - 1, 0)} messages, {_digest(dumped[:-1])}",
            "settings": _canonical(settings),
            "parameters": _digest(_canonical(parameters)),  # tool definitions, output mode
        }
    if isinstance(operation_id, _TOOL_CALL_UNITS):
        tool, tool_args, ctx = cache_key[:3]
        call_id = getattr(ctx, "tool_call_id", None)
        return {"tool": tool, "args": _canonical(tool_args), "tool_call_id": call_id}
    return {"params": [_canonical(p) for p in cache_key if not isinstance(p, RunContext)]}


def _kind(operation_id: DurableOperationId) -> EventKind:
    if isinstance(operation_id, _MODEL_UNITS):
        return EventKind.LLM
    return EventKind.TOOL if isinstance(operation_id, _TOOL_UNITS) else EventKind.STEP


class _JournalBackend(CallableOperationBackend[None]):
    """Runs each durable unit as a journal step of the run the calling task belongs to."""

    def __init__(self, agent_name: str, default_model_id: str | None) -> None:
        self.agent_name = agent_name
        namer = JournalOperationNamer(agent_name, default_model_id=default_model_id or "default")
        config = RoleBasedOperationConfig[None](model=None, event=None, capability=None, tool=None)
        super().__init__(namer=namer, config=config)

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: None,
    ) -> object:
        scope = current_scope.get()
        if scope is None:  # the base only dispatches inside a run; stay transparent anyway
            return await body()
        session = scope.session
        found = (item for item in cache_key if isinstance(item, RunContext))
        ctx = next(found, None) or _dispatching.get()
        if isinstance(operation_id, _TOOL_CALL_UNITS) and ctx is not None and ctx.tool_call_id:
            name = f"{name}@{ctx.tool_call_id}"  # parallel calls of one tool are told apart
        # Session reads a spec's name, kind, called_from_library and is_async: a unit has those.
        step = cast("StepSpec", _UnitStep(name, _kind(operation_id)))
        key = _unit_key(scope, operation_id, name, ctx)
        arguments = canonical_json(_arguments(operation_id, cache_key))
        if session.redact is not None:
            arguments = session.redact(arguments)
        decision = session.prepare(step, key, arguments, fingerprint(name, arguments), _NO_SITE)
        if isinstance(decision, Turn):
            await session.take_turn(decision)  # handed out in the order the run received it
            decision = decision.row
        if isinstance(decision, tuple):
            record_durable_unit(executed=False)
            if decision[5] == "completed":
                return _recorded(step, decision[7])
            raise rebuild_error(decision[7])
        return await _run_live(session, step, decision, body)


async def _run_live(
    session: Session, step: StepSpec, plan: LivePlan, body: Callable[[], Awaitable[object]]
) -> object:
    """Run the unit's body outside the journal (its inner work is its own) and append it."""
    starting = session.start(step, plan)
    tokens = current_scope.set(None), live_step_key.set(f"{session.run_id}:{plan.key}")
    try:
        await session.started(starting)
        value = await body()
    except _Unencodable as exc:
        raise _not_journalable(session, plan, step, exc) from exc.__cause__
    except Exception as exc:
        _finish(session, step, plan, EventStatus.FAILED, RecordedError.from_exception(exc).encode())
        await session.hold_live(plan.key, step.name)
        failure = as_replayed_error(exc, session.redact)  # what replay raises: same, or StepFailed
        if failure is exc:
            raise
        raise failure from exc
    except asyncio.CancelledError:
        session.cancelled(step, plan)
        raise
    except BaseException as exc:
        step_stopped(session, plan, exc)
        raise
    finally:
        current_scope.reset(tokens[0])
        live_step_key.reset(tokens[1])
    try:
        payload = orjson.dumps(_with_usage(value) if step.kind is EventKind.LLM else value)
    except TypeError as exc:  # JSON_CODEC made JSON values, but orjson stops at 64-bit ints
        raise _not_journalable(session, plan, step, exc) from exc
    # Live sees what replay will serve: the stored (possibly redacted) bytes, decoded.
    stored = _finish(session, step, plan, EventStatus.COMPLETED, payload)
    await session.hold_live(plan.key, step.name)
    return _recorded(step, stored)


def _with_usage(response: object) -> object:
    """A model response plus the `llm` summary that `journal runs` totals tokens from."""
    if not isinstance(response, dict) or response.get("kind") != "response":
        return response
    usage, get = response.get("usage") or {}, response.get
    tokens = usage.get("input_tokens"), usage.get("output_tokens")
    summary = usage_summary(get("provider_name"), get("model_name"), *tokens, get("finish_reason"))
    return {**response, "llm": summary}


def _recorded(step: StepSpec, payload: bytes | None) -> object:
    """The unit's result as pydantic-ai's codec made it (without the journal's `llm` summary)."""
    value = orjson.loads(payload or b"null")
    if step.kind is EventKind.LLM and isinstance(value, dict):
        value.pop("llm", None)
    return value


def _not_journalable(
    session: Session, plan: LivePlan, step: StepSpec, exc: Exception
) -> NotJournalable:
    reason = f"its result cannot be stored as JSON ({exc})"
    return NotJournalable(session.run_id, plan.key, step.name, reason)


def _finish(
    session: Session, step: StepSpec, plan: LivePlan, status: EventStatus, payload: bytes
) -> bytes:
    if session.redact is not None:
        payload = session.redact(payload)
    what = "result" if status is EventStatus.COMPLETED else "error"
    session.check_size(plan.key, step.name, what, payload)
    session.finish(step, plan, status, payload)
    record_durable_unit(executed=True)
    return payload


class JournalDurability(BaseDurabilityCapability[AgentDepsT]):
    """Journal an agent's model requests and tool calls when it runs inside a journaled run.

    >>> agent = Agent(model, name="support", capabilities=[JournalDurability()])

    Inside `replay.run(...)` or `async with replay.journaled(...)`, each model request is a
    step of kind `llm` and each tool call one of kind `tool`, named by pydantic-ai's stable
    journal names (`support__model.request`, `support__function_toolset__<agent>.call_tool:
    lookup@<tool_call_id>`). A resume serves what was recorded and runs the rest live; replay
    mode calls no model and no tool. A tool that raises is journaled as failed and replays as
    the same failure; a `ModelRetry` is journaled as the retry it asks for. A result that
    cannot be stored as JSON raises `NotJournalable`. Outside a run: a pass-through. Give
    `agent.run` no `run_id` inside a journaled run, or a stable one: it names the run's steps.

    name: prefixes every step name; defaults to the agent's `name`. Keep it stable.
    models: extra models a run may select by key (the agent's own is always registered).
    event_stream_handler: receives model events live inside the model step (not on replay:
        the step is served) and tool events each as a step of its own. A handler passed to
        `agent.run(...)` instead sees the same events live and on replay.
    parallel_tools: "parallel_ordered_events" (default: tools run concurrently, their events
        and errors settle in call order, so replay matches) or "sequential".
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="journal-replay",
        durable_unit_noun="step",
        durable_container_noun="journaled run",
        codec=JSON_CODEC,
        serialization_failure=_Unencodable,
        # One MCP session per run, opened by the first unit that needs it: a replay opens none.
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
    )

    def __init__(
        self,
        *,
        name: str | None = None,
        models: Mapping[str, Model] | None = None,
        event_stream_handler: EventStreamHandler[AgentDepsT] | None = None,
        parallel_tools: Literal["parallel_ordered_events", "sequential"] = (
            "parallel_ordered_events"
        ),
    ) -> None:
        super().__init__(models=models, event_stream_handler=event_stream_handler, name=name)
        self.parallel_tools = parallel_tools
        self._backend: _JournalBackend | None = None

    def for_agent(self, agent: AbstractAgent[AgentDepsT, Any]) -> AbstractCapability[AgentDepsT]:
        if not (self.name or agent.name):
            raise UserError(
                "JournalDurability needs a stable agent name: it prefixes every journaled step "
                "(`support__model.request`). Fix: Agent(..., name='support') or "
                "JournalDurability(name='support'), and keep it: recorded runs replay only "
                "under the name they were recorded with."
            )
        return super().for_agent(agent)

    @property
    def in_durable_context(self) -> bool:
        """Inside a journaled run, and not inside a unit's live body (that work is the unit's)."""
        return current_scope.get() is not None

    def get_default_run_id(self) -> str | None:
        """The agent run takes the next key of the calling task: the same on every sitting."""
        scope = current_scope.get()
        if scope is None:
            return None
        key = scope.next_key()
        run_id = f"{scope.session.run_id}:{key}"
        _agent_runs.setdefault(scope.session, _AgentRuns()).paths[run_id] = key
        return run_id

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if self.in_durable_context else None

    async def wrap_run(
        self, ctx: RunContext[AgentDepsT], *, handler: WrapRunHandler
    ) -> AgentRunResult[Any]:
        """Settle parallel tool calls in call order; keep served units out of telemetry."""
        if not self.in_durable_context:
            return await handler()
        with replay_scope(), AbstractAgent.parallel_tool_call_execution_mode(self.parallel_tools):
            return await super().wrap_run(ctx, handler=handler)

    async def _dispatch_event_stream_event(
        self, ctx: RunContext[AgentDepsT], event: AgentStreamEvent
    ) -> None:
        # The base's override point for engines that key event units themselves.
        token = _dispatching.set(ctx)
        try:
            await super()._dispatch_event_stream_event(ctx, event)
        finally:
            _dispatching.reset(token)

    def get_durable_operation_backend(self) -> _JournalBackend:
        if self._backend is None or self._backend.agent_name != self.name:
            self._backend = _JournalBackend(self.name, self.default_model_id)
        return self._backend
