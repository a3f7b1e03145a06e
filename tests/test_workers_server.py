"""A streamcore server process for the multi-process tests (no tests here).

``python -m tests.test_workers_server CONFIG [WORKERS]`` serves CONFIG with
:func:`streamcore.adapters.workers.run_workers`, with an engine whose topic hook lets a
client follow ``indexing`` and its own ``user:<id>`` topic.
"""

from __future__ import annotations

import sys


def make_engine(config):
    from streamcore import Engine

    engine = Engine(config)

    @engine.topic_authorizer
    async def may_follow(session, topic):
        return topic == "indexing" or (session.user_id is not None and topic == f"user:{session.user_id}")

    return engine


if __name__ == "__main__":
    from streamcore.adapters.workers import run_workers
    from streamcore.config import load_config

    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    sys.exit(run_workers(load_config(sys.argv[1]), workers, engine_factory=make_engine, log_format="json", log_level="info"))
