-- wrk script: POST /pay for distinct orders (or POST /payments/{id}/refunds for distinct
-- payments); one line of JSON results at the end.
--
-- Arguments (after `--`): first stride count threads mode key_prefix [ids_file]
--
-- Id number i of the run's block is id first + i * stride. Thread t (0-based) of
-- `threads` sends, as its j-th request, id number t + threads * j: no two requests of a
-- run pay the same order (or refund the same payment). A request past the block
-- (number >= count) is counted in `past_block`: the block was too small, and the run is void.
--
-- mode "plain" sends no key; "keyed" sends Idempotency-Key <key_prefix><order id>;
-- "replay" sends the keyed requests again for the order ids listed in ids_file, one per
-- line, round robin: each should be answered with the first 200, replayed;
-- "refund" refunds the payment of that id in full (body `{}`), with no key.

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

function init(args)
   first = tonumber(args[1])
   stride = tonumber(args[2])
   count = tonumber(args[3])
   nthreads = tonumber(args[4])
   mode = args[5]
   prefix = args[6]
   sent = 0
   past_block = 0
   replayed = 0
   statuses = {}
   if mode == "replay" then
      ids = {}
      for line in io.lines(args[7]) do
         ids[#ids + 1] = tonumber(line)
      end
      count = #ids
   end
end

function request()
   local number = index + nthreads * sent
   sent = sent + 1
   local id
   if mode == "replay" then
      id = ids[number % count + 1]
   else
      if number >= count then
         past_block = past_block + 1
      end
      id = first + number * stride
   end
   local headers = { ["Content-Type"] = "application/json" }
   if mode == "refund" then
      return wrk.format("POST", string.format("/payments/%d/refunds", id), headers, "{}")
   end
   if mode ~= "plain" then
      headers["Idempotency-Key"] = string.format("%s%d", prefix, id)
   end
   local body = string.format('{"order_id": %d, "amount": "10.00"}', id)
   return wrk.format("POST", "/pay", headers, body)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if headers["idempotent-replayed"] == "true" or headers["Idempotent-Replayed"] == "true" then
      replayed = replayed + 1
   end
end

function done(summary, latency, requests)
   local totals = {}
   local sent_total, past_total, replayed_total = 0, 0, 0
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         totals[status] = (totals[status] or 0) + n
      end
      sent_total = sent_total + thread:get("sent")
      past_total = past_total + thread:get("past_block")
      replayed_total = replayed_total + thread:get("replayed")
   end
   local statuses_json = {}
   for status, n in pairs(totals) do
      statuses_json[#statuses_json + 1] = string.format('"%d": %d', status, n)
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_us": %d, "sent": %d, "past_block": %d, '
         .. '"replayed": %d, "statuses": {%s}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d}, '
         .. '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
      summary.requests, summary.duration, sent_total, past_total, replayed_total,
      table.concat(statuses_json, ", "),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      errors.connect, errors.read, errors.write, errors.timeout
   ))
end
