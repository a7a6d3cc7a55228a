from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from sqlalchemy import Engine

from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.ports import UnitOfWork
from tests.contract.unit_of_work_contract import UnitOfWorkContract
from tests.support.orders import add_orders


class TestSqlAlchemyUnitOfWork(UnitOfWorkContract):
    engine: Engine

    @pytest.fixture(autouse=True)
    def empty_database(self, clean_database: Engine) -> None:
        self.engine = clean_database

    def unit_of_work_factory(self) -> Callable[[], UnitOfWork]:
        return partial(SqlAlchemyUnitOfWork, self.engine)

    def add_orders(self, *totals: str, status: str = "pending") -> list[int]:
        return add_orders(self.engine, *totals, status=status)
