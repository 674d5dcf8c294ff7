"""Fixtures of the report tests."""

from __future__ import annotations

import pytest
from report_factories import connection, direction

from whyreset.core.connection import Connection
from whyreset.ids import Outcome


@pytest.fixture
def reset_connection() -> Connection:
    return connection()


@pytest.fixture
def clean_connection() -> Connection:
    return connection(
        uid="CclEaN0000000000001",
        outcome=Outcome.CLEAN,
        conn_state="SF",
        history="ShADadFf",
        resets=(),
        resp=direction(isn=2000),
    )
