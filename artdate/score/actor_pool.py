"""A pool of Ray actors that take one task at a time, replacing any that dies or fails to start.

Generic: score/run.py gives it a way to make a scoring actor and hands it shards.
"""

from __future__ import annotations

import sys


class ActorPool:
    """Scoring actors, with the calls in flight and the actors that have not started yet. An actor
    that dies or fails to start is replaced, up to `max_retries` times per shard and for starts."""

    def __init__(self, make_actor, size: int, max_retries: int):
        import ray

        self.ray, self.make_actor, self.max_retries = ray, make_actor, max_retries
        self.actors = [make_actor() for _ in range(size)]
        self.starting = {actor.ready.remote(): index for index, actor in enumerate(self.actors)}
        self.idle: list[int] = []
        self.running: dict = {}  # object ref -> (actor index, shard url, manifest entry)
        self.failed_starts = 0
        self.deaths: dict[str, int] = {}  # shard url -> times its actor died

    def started(self) -> int:
        return len(self.actors) - len(self.starting)

    def replace(self, index: int) -> None:
        """Kill the actor for good (a dead or unreachable actor may still hold its GPU) and start another."""
        self.ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self.make_actor()
        self.starting[self.actors[index].ready.remote()] = index

    def submit(self, index: int, url: str, entry: dict) -> None:
        self.running[self.actors[index].score.remote(url, entry["samples"], entry["split"])] = (index, url, entry)

    def wait(self, timeout: float):
        """The next actor that started or shard that finished, or None after `timeout` seconds."""
        ready, _ = self.ray.wait([*self.running, *self.starting], num_returns=1, timeout=timeout)
        return ready[0] if ready else None

    def start_finished(self, ref) -> None:
        """An actor's start-up ended: it is idle now, or it failed and another one starts."""
        index = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayActorError as problem:
            self.failed_starts += 1
            if self.failed_starts > self.max_retries:
                raise RuntimeError(
                    f"scoring actors failed to start {self.failed_starts} times; last: {problem}"
                ) from None
            print(f"a scoring actor failed to start ({str(problem)[:200]}); starting another", file=sys.stderr)
            self.replace(index)
            return
        self.idle.append(index)

    def shard_finished(self, ref) -> tuple[str, dict, tuple | None]:
        """(shard url, manifest entry, what the actor returned); None when the actor died, which
        is replaced: the caller queues the shard again."""
        index, url, entry = self.running.pop(ref)
        try:
            result = self.ray.get(ref)
        except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as problem:
            self.deaths[url] = self.deaths.get(url, 0) + 1
            if self.deaths[url] > self.max_retries:
                raise RuntimeError(f"scoring {url} failed {self.deaths[url]} times; last: {problem}") from None
            print(f"actor died while scoring {url}; replacing it and scoring the shard again", file=sys.stderr)
            self.replace(index)
            return url, entry, None
        self.idle.append(index)
        return url, entry, result

    def shutdown(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
