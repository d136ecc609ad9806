"""Dynamic batching: calls that arrive together from several threads run as one batched model call.

Many questions in flight (`Engine.answer_batch`, or a server's concurrent requests) each run the VQA graph in a
thread of their own; every model stage they share goes through a `Batcher`, which gathers the calls waiting at it
and runs them as one batch, as inference servers do. The first caller of a batch waits until no question in
flight (`in_flight`) is still on its way, each waiting here or at another stage, or `max_size` calls are in, or
`window` seconds have passed, whichever comes first; then it runs the batch for all of them and hands each caller
its own result. (Waiting only for the questions already here split a batch: the first question out of intake
went through the encoder and the LLM alone while the rest followed as a second batch.) One batch runs at a time, so
a batcher is also its model's lock. A batch that fails is retried one call at a time, so a bad input fails only
its own question.

On a CPU, the batches of every stage run on one worker thread (`runner`, the toolkit's): two stages at once
fight over the cores, and each Python thread that runs torch ops gets its own OpenMP team whose threads spin
after use, so batches led by one question thread after another stalled the machine (the text route answered 32
questions slower batched than one by one: benchmarks/bench_batching.py). A stage called from inside another's
batch (the CNN under GradCAM) runs at once on that thread, inline, instead of waiting for a batch that could
never start.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_inside = threading.local()  # depth: this thread is running a batch
T = TypeVar("T")
R = TypeVar("R")
Pending = tuple[T, "Future[R]", Hashable]  # a call, its result to come, its key (computed once, on arrival)


@dataclass
class BatchStats:
    """What a batcher has done: batches run and the calls in them (for metrics and benchmarks)."""

    sizes: list[int] = field(default_factory=list)  # calls per batch, in order
    window_ran_out: int = 0  # batches that went at the window's end, a question in flight still on its way
    seconds: float = 0.0  # inside the batched calls (not their wait for the model thread)

    @property
    def batches(self) -> int:
        return len(self.sizes)

    @property
    def calls(self) -> int:
        return sum(self.sizes)


class InFlight:
    """How many questions are running on an engine now, and how many of their threads wait at a batcher: a
    batch goes once no question is still on its way to it (every one waits here or at another stage)."""

    def __init__(self) -> None:
        self._count = 0
        self._waiting = 0  # threads inside a batcher's `map` (waiting for a batch, or leading one)
        self._lock = threading.Lock()
        self._depth = threading.local()  # a question counts once, however deeply its thread enters
        self._watchers: list[threading.Condition] = []  # the batchers' own conditions, woken on each change

    def watch(self, ready: threading.Condition) -> None:
        with self._lock:
            self._watchers.append(ready)

    def __enter__(self) -> InFlight:
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        if depth == 0:
            self.arrive()
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        if self._depth.n == 0:
            self.leave()

    def arrive(self) -> None:
        """Count a question in from outside any one thread (a server request, from its admission on)."""
        with self._lock:
            self._count += 1

    def leave(self) -> None:
        with self._lock:
            self._count -= 1
        self._wake()

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """This thread works for a question already counted (`arrive`): `with in_flight` inside adds nothing."""
        self._depth.n = getattr(self._depth, "n", 0) + 1
        try:
            yield
        finally:
            self._depth.n -= 1

    @property
    def count(self) -> int:
        return self._count

    @property
    def running(self) -> int:
        """Questions doing work of their own (intake, prompts, an unbatched step): they may join a batch soon."""
        return self._count - self._waiting

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """This thread waits on a model (a batcher, or a model server's reply): it joins no other batch meanwhile."""
        self._add_waiting(+1)
        try:
            yield
        finally:
            self._add_waiting(-1)

    def _add_waiting(self, step: int) -> None:
        with self._lock:
            self._waiting += step
        self._wake()

    def _wake(self) -> None:
        """A leader gathering a batch elsewhere may now have no one left to wait for."""
        for ready in list(self._watchers):
            with ready:
                ready.notify_all()


@dataclass(frozen=True)
class BatchPolicy:
    """How a toolkit's batchers gather: the most calls per batch, the longest wait, the questions in flight."""

    max_size: int = 32
    window: float = 0.005
    in_flight: InFlight | None = None
    observe: Callable[[str, int], None] | None = None  # (stage, batch size) after each batch, e.g. for metrics
    # Shared by a toolkit's batchers: every batch runs on this one thread (on a CPU); None: on the leader's thread.
    runner: Executor | None = None
    stage_max: Mapping[str, int] = field(default_factory=dict)  # a smaller max_size for some stages

    def batcher(self, run_batch: Callable[[list[T]], Sequence[R]], key: Callable[[T], Hashable] | None = None,
                stage: str = "") -> Batcher[T, R]:
        observe = self.observe
        on_batch = None if observe is None else (lambda size: observe(stage, size))
        size = min(self.max_size, self.stage_max.get(stage, self.max_size))
        return Batcher(run_batch, max_size=size, window=self.window, in_flight=self.in_flight, key=key,
                       on_batch=on_batch, runner=self.runner)


class Batcher(Generic[T, R]):
    """Runs `run_batch(items) -> results` (one result per item, in order) on calls gathered from many threads.

    `key(item)` keeps apart calls that cannot share a batch (e.g. different generation settings)."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_size: int = 32,
        window: float = 0.01,
        in_flight: InFlight | None = None,
        key: Callable[[T], Hashable] | None = None,
        on_batch: Callable[[int], None] | None = None,
        runner: Executor | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_size = max_size
        self.window = window
        self.in_flight = in_flight
        self.key = key
        self.on_batch = on_batch
        self.runner = runner
        self._running = threading.RLock()  # the model itself: a batch, or an inline call from inside another batch
        self.stats = BatchStats()
        self._pending: list[Pending[T, R]] = []
        self._ready = threading.Condition()
        if in_flight is not None:
            in_flight.watch(self._ready)
        self._leader = False  # a caller is gathering a batch

    def __call__(self, item: T) -> R:
        return self.map([item])[0]

    def map(self, items: Sequence[T]) -> list[R]:
        """Each item's result, in order; the items join the calls pending from other threads."""
        if getattr(_inside, "depth", 0):  # called from inside a batch of another stage: run now, inline
            self._count(len(items))
            return self._on_this_thread(list(items))
        with self.in_flight.waiting() if self.in_flight is not None else contextlib.nullcontext():
            return self._join(items)

    def _join(self, items: Sequence[T]) -> list[R]:
        futures: list[Future[R]] = [Future() for _ in items]

        def answered() -> bool:
            return all(f.done() for f in futures)

        with self._ready:
            keys = [self.key(item) if self.key else None for item in items]
            self._pending.extend(zip(items, futures, keys, strict=True))
            self._ready.notify_all()
            while self._leader and not answered():
                self._ready.wait()
            lead = not answered()
            if lead:
                self._leader = True  # no one is gathering: this caller runs batches until its calls are answered
        if lead:
            try:
                while not answered():
                    self._run(self._gather())
                    with self._ready:
                        self._ready.notify_all()
            finally:
                with self._ready:
                    self._leader = False  # a waiting caller takes over
                    self._ready.notify_all()
        return [f.result() for f in futures]

    def _everyone_here(self) -> bool:
        """No one else to wait for: a full batch, no question in flight still on its way (each waits here or at
        another stage, whose batch runs first), or no count of them kept (a tool used on its own batches only
        the calls already pending)."""
        return self.in_flight is None or len(self._pending) >= self.max_size or self.in_flight.running <= 0

    def _gather(self) -> list[Pending[T, R]]:
        deadline = time.monotonic() + self.window
        with self._ready:
            while not self._everyone_here():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats.window_ran_out += 1
                    break
                self._ready.wait(left)
            return self._take()

    def _on_this_thread(self, items: list[T]) -> list[R]:
        with self._running:
            _inside.depth = getattr(_inside, "depth", 0) + 1
            start = time.perf_counter()  # the batch itself, not its wait for the model thread
            try:
                return list(self.run_batch(items))
            finally:
                self.stats.seconds += time.perf_counter() - start
                _inside.depth -= 1

    def _take(self) -> list[Pending[T, R]]:
        """Up to `max_size` pending calls, all with the first one's key."""
        first = self._pending[0][2]
        batch: list[Pending[T, R]] = []
        rest: list[Pending[T, R]] = []
        for entry in self._pending:
            (batch if entry[2] == first and len(batch) < self.max_size else rest).append(entry)
        self._pending = rest
        return batch

    def _count(self, size: int) -> None:
        self.stats.sizes.append(size)
        if self.on_batch is not None:
            self.on_batch(size)

    def _run(self, batch: list[Pending[T, R]]) -> None:
        items = [item for item, _, _ in batch]
        self._count(len(items))
        failed: BaseException | None = None
        try:
            if self.runner is None:
                results = self._on_this_thread(items)
            else:
                results = self.runner.submit(self._on_this_thread, items).result()
        except BaseException as exc:
            failed = exc
        if failed is None:
            for (_, done, _), result in zip(batch, results, strict=True):
                done.set_result(result)
        elif len(batch) == 1:
            batch[0][1].set_exception(failed)
        else:
            for entry in batch:  # one bad input must not fail the others: each alone
                self._run([entry])
