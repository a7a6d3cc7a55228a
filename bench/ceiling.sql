-- The ceiling: the transaction the service commits for POST /pay without a key
-- (SqlAlchemyUnitOfWork with the repositories in src/payment/adapters/sqlalchemy),
-- driven by pgbench straight at the database. The first line is the harness's own: it
-- picks the next pending order of the run's block; the service gets the id in the request.
SELECT nextval('bench_next_order') AS id \gset
BEGIN;
SELECT id, status, total_price, paid_at FROM orders WHERE id = :id FOR UPDATE;
UPDATE orders SET status = 'paid', paid_at = LOCALTIMESTAMP WHERE id = :id AND status = 'pending';
INSERT INTO payments (order_id, amount, status, created_at)
  VALUES (:id, 10.00, 'succeeded', LOCALTIMESTAMP) RETURNING id AS payment_id \gset
INSERT INTO payment_attempts
  (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id, idempotency_key)
  VALUES (LOCALTIMESTAMP, 'ceiling-' || CAST(:id AS text), 'anonymous', :id, 10.00, 'paid', :payment_id, NULL);
COMMIT;
