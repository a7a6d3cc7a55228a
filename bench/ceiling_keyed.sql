-- The ceiling with an Idempotency-Key: the transaction the service commits for POST /pay
-- with a new key (claim the key, pay, audit, record the answer), driven by pgbench straight
-- at the database. The first line is the harness's own: it picks the next pending order.
SELECT nextval('bench_next_order') AS id \gset
BEGIN;
SET LOCAL lock_timeout = 1000;
INSERT INTO idempotency_keys (caller, key, fingerprint, created_at, expires_at)
  VALUES ('anonymous', 'ceiling-' || CAST(:id AS text),
          encode(sha256(convert_to('pay' || chr(10) || CAST(:id AS text) || chr(10) || '10.00', 'UTF8')), 'hex'),
          LOCALTIMESTAMP, LOCALTIMESTAMP + interval '24 hours')
  ON CONFLICT (caller, key) DO NOTHING RETURNING key;
SET LOCAL lock_timeout TO DEFAULT;
SELECT id, status, total_price, paid_at FROM orders WHERE id = :id FOR UPDATE;
UPDATE orders SET status = 'paid', paid_at = LOCALTIMESTAMP WHERE id = :id AND status = 'pending';
INSERT INTO payments (order_id, amount, status, created_at)
  VALUES (:id, 10.00, 'succeeded', LOCALTIMESTAMP) RETURNING id AS payment_id \gset
INSERT INTO payment_attempts
  (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id, idempotency_key)
  VALUES (LOCALTIMESTAMP, 'ceiling-' || CAST(:id AS text), 'anonymous', :id, 10.00, 'paid', :payment_id,
          'ceiling-' || CAST(:id AS text));
UPDATE idempotency_keys
  SET answer_status = 200,
      answer_body = '{"message":"Payment successful","order_id":' || CAST(:id AS text)
        || ',"payment_id":' || CAST(:payment_id AS text)
        || ',"amount":"10.00","status":"succeeded","created_at":"'
        || (to_json(LOCALTIMESTAMP) #>> '{}') || 'Z"}'
  WHERE caller = 'anonymous' AND key = 'ceiling-' || CAST(:id AS text);
COMMIT;
