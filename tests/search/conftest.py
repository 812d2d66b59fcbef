import itertools
import os

import pytest

from tests.postgres import throwaway_cluster, why_unavailable

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster (initdb + pg_ctl on a temp dir, as the postgres user under root)."""
    reason = why_unavailable()
    if reason:
        if os.environ.get("CI") == "true":  # .ci/run installs PostgreSQL: its absence there is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster):
    """A new empty database on the session's cluster: its SQLAlchemy URL (Unix socket)."""
    return postgres_cluster.create_database(f"study{next(_names)}")
