from sqlalchemy import Engine, text

from tests.support.orders import add_orders, broken_invariants


def test_fixture_gives_a_migrated_empty_database(clean_database: Engine) -> None:
    ids = add_orders(clean_database, "10.00", "20.00")
    with clean_database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM payments")).scalar_one() == 0
        assert connection.execute(text("SELECT count(*) FROM orders")).scalar_one() == 2
    assert ids == [1, 2]
    assert broken_invariants(clean_database) == []
