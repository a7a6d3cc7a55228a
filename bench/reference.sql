-- The fixed reference: the seed's own transaction (mark the order paid, insert its payment),
-- driven by pgbench straight at the database. It follows nothing the service does, so no
-- change of the service's SQL moves it: the service's throughput is reported against it.
-- It writes no audit record; the harness adds those after each run, outside the measure, so
-- that `payment-service verify` finds the store sound.
-- The first line is the harness's own: it picks the next pending order of the run's block.
SELECT nextval('bench_next_order') AS id \gset
BEGIN;
UPDATE orders SET status = 'paid', paid_at = LOCALTIMESTAMP WHERE id = :id AND status = 'pending' RETURNING id;
INSERT INTO payments (order_id, amount, status, created_at) VALUES (:id, 10.00, 'succeeded', LOCALTIMESTAMP);
COMMIT;
