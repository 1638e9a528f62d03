"""OpenTelemetry traces of runs: each run a trace, each step a span, emitted as the run goes.

    from replay import otel
    otel.instrument()                        # spans go to the global tracer provider
    otel.instrument(tracer_provider=tp)      # or to this one

Needs the `otel` extra (`pip install 'journal-replay[otel]'`). Once instrumented, every sitting
that runs a workflow (`run`, `journaled`, a resume, a worker) emits a span per step attempt as
its outcome is committed, a span per step served from the journal on resume (marked
`journal.step.served`, without token counts: nothing was paid), and the run's own span when
the run finishes. Replays emit nothing: nothing happens in the world then.

Ids come from the run id, so these spans and a later `journal export -f otlp RUN` of the same
run (`Journal.export_otlp`) agree. What the spans hold: `journal._spans`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from journal import Event, EventKind, Journal, Run, RunStatus
from journal._events import KIND_BY_VALUE, EventRow
from journal._spans import StepSpans, run_span, served_span, trace_id_of

from ._log import get_logger
from ._observe import observe_with

__all__ = ["instrument", "is_instrumented", "uninstrument"]

log = get_logger("replay")

_ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
_instrumented: list[Any] = []


def instrument(tracer_provider: Any = None, *, served_steps: bool = True) -> None:
    """Emit spans for every run from now on, to `tracer_provider` (an OpenTelemetry SDK
    `TracerProvider`), or to the global provider, looked up at each sitting so that one set
    later counts. Calling it again replaces the settings; `uninstrument()` stops.

    `served_steps=False` sends no span for steps a resume answers from the journal (a resume
    of a long run then costs no more than without spans); their first sitting sent theirs.

    Raises ImportError naming the extra to install when OpenTelemetry is missing, and
    TypeError for something that is no tracer provider (an exporter, a tracer)."""
    from journal import _otel  # noqa: F401  (the clear ImportError, now rather than mid-run)

    if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", None)):
        raise TypeError(
            f"otel.instrument() takes a TracerProvider, not {type(tracer_provider).__name__} "
            f"({tracer_provider!r:.80}). Fix: provider = TracerProvider(); "
            "provider.add_span_processor(BatchSpanProcessor(exporter)); "
            "otel.instrument(tracer_provider=provider) (or no argument: the global provider)."
        )
    _instrumented[:] = [tracer_provider]
    observe_with(functools.partial(_RunSpans.open, tracer_provider, served_steps))


def uninstrument() -> None:
    """Stop emitting spans (sittings already running finish theirs)."""
    _instrumented.clear()
    observe_with(None)


def is_instrumented() -> bool:
    return bool(_instrumented)


class _RunSpans:
    """One sitting's spans. Never raises into the engine: a failure is logged and skipped."""

    def __init__(
        self, journal: Journal, run: Run, token: str, tracer: Any, sampled: bool, served: bool
    ) -> None:
        self.served_steps = served
        self.journal = journal
        self.run = run
        self.token = token
        self.tracer = tracer
        self.sampled = sampled
        self.steps = StepSpans(run)

    @classmethod
    def open(
        cls, provider: Any, served: bool, journal: Journal, run: Run, token: str
    ) -> _RunSpans | None:
        from journal import _otel

        try:
            if provider is None:
                from opentelemetry import trace

                provider = trace.get_tracer_provider()
            if not _otel.records_spans(provider):
                return None  # no provider set yet: spans would go nowhere
            tracer = _otel.journal_tracer(provider)
            sampled = _otel.root_sampled(tracer, trace_id_of(run.run_id))
        except Exception as exc:
            log.warning("otel.unavailable", run_id=run.run_id, error=repr(exc))
            return None
        return cls(journal, run, token, tracer, sampled, served)

    def _emit(self, record: Any) -> None:
        """Hand one span to the tracer; a failure (the user's processor or exporter raising)
        costs that span only, never the others of the commit, nor the run."""
        from journal._otel import emit

        try:
            emit(self.tracer, record, sampled=self.sampled)
        except Exception as exc:
            log.warning(
                "otel.span_failed", run_id=self.run.run_id, span=record.name, error=repr(exc)
            )

    def written(self, events: Sequence[Event]) -> None:
        try:
            for event in events:
                if event.kind is EventKind.FORK:
                    for cut in self.steps.superseded(event):
                        self._emit(cut)
                    break  # what follows a marker in its commit are copies of earlier rows
                span = self.steps.add(event)
                if span is not None:
                    self._emit(span)
        except Exception as exc:
            log.warning("otel.span_failed", run_id=self.run.run_id, error=repr(exc))

    def served(self, row: EventRow, arguments: bytes | None) -> None:
        if not self.served_steps:
            return
        _, key, kind, name, _, status, attempt, payload, _ = row
        try:
            span = served_span(
                self.run,
                key,
                KIND_BY_VALUE[kind],
                name,
                status,
                attempt,
                payload,
                arguments,
                time.time_ns(),
                self.token,
            )
            self._emit(span)
        except Exception as exc:
            log.warning("otel.span_failed", run_id=self.run.run_id, key=key, error=repr(exc))

    def closed(self, finished: bool) -> None:
        """Attempts the sitting left without an outcome (a stop, a crash signal: they stay in
        flight in the journal, and an export shows them the same); the run's own span once
        the run has ended (a suspended run's comes when it does)."""
        try:
            for span in self.steps.unfinished():
                self._emit(span)
            if not finished:
                return
            run = self.journal.store.get_run(self.run.run_id)
            if run is not None and run.status in _ENDED:
                self._emit(run_span(run))
        except Exception as exc:
            log.warning("otel.span_failed", run_id=self.run.run_id, error=repr(exc))
