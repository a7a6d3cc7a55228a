-- The ceiling: the statements the service sends for POST /pay without a key, driven by
-- pgbench straight at the database. The service sends exactly two, in autocommit (no BEGIN,
-- no COMMIT, no pre-ping): a read of the order (and of the key, NULL here) that also takes
-- the payment's id when the order can be paid, then one guarded write that marks the order
-- paid and inserts the payment, its audit record and its payment.succeeded event (the
-- outbox), each insert taking its row from the one before, so that nothing is written
-- unless the update took the order. The event's body is a CloudEvent of the size the service
-- writes, with a new id; the service makes both itself and sends them as parameters.
-- The first line is the harness's own: it picks the next pending order of the run's block;
-- the service gets the id in the request.
SELECT nextval('bench_next_order') AS id \gset
SELECT o.id, o.status, o.total_price, o.paid_at,
       CASE WHEN o.status = 'pending' AND k.key IS NULL THEN nextval('payments_id_seq') END AS payment_id,
       k.fingerprint, k.answer_status, k.answer_body
  FROM (SELECT) AS one
  LEFT JOIN orders AS o ON o.id = :id
  LEFT JOIN idempotency_keys AS k ON k.caller = 'anonymous' AND k.key = NULL \gset
WITH guard AS (
       UPDATE orders SET status = 'paid', paid_at = LOCALTIMESTAMP
        WHERE id = :id AND status = 'pending' AND total_price = 10.00 RETURNING id),
     w0 AS (
       INSERT INTO payments (id, order_id, amount, status, created_at)
       SELECT :payment_id, :id, 10.00, 'succeeded', LOCALTIMESTAMP FROM guard RETURNING 1),
     w1 AS (
       INSERT INTO payment_attempts
         (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id, idempotency_key)
       SELECT LOCALTIMESTAMP, 'ceiling-' || :id, 'anonymous', :id, 10.00, 'paid', :payment_id, NULL
         FROM w0 RETURNING 1),
     w2 AS (
       INSERT INTO outbox_events
         (event_id, type, subject, payment_id, body, created_at, next_attempt_at)
       SELECT e.id, 'payment.succeeded', :id::text, :payment_id,
              '{"specversion": "1.0", "id": "' || e.id
                || '", "source": "/payment-service", "type": "payment.succeeded", "subject": "'
                || :id || '", "time": "' || e.at
                || '", "datacontenttype": "application/json", "data": {"order_id": ' || :id
                || ', "payment_id": ' || :payment_id || ', "amount": "10.00", "created_at": "'
                || e.at || '"}}',
              LOCALTIMESTAMP, LOCALTIMESTAMP
         FROM w1, (SELECT gen_random_uuid() AS id,
                          (to_json(LOCALTIMESTAMP) #>> '{}') || 'Z' AS at) AS e
       RETURNING 1)
SELECT count(*) FROM guard;
