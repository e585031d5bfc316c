-- wrk script: POST a small, non-streaming OpenAI chat completion.
-- Used by loadtest/run against shardgate, nginx and the mock provider alike,
-- so every target receives byte-identical requests.
--
-- CHAT_MODEL (environment) replaces the model name, default `mock-model`
-- (the body ab sends). The pool50 scenario sets CHAT_MODEL=pool-model, the
-- same length, routed to a provider with a 50-key credential pool.
--
-- At the end it prints one machine-readable line for loadtest/run:
--   WRK_RESULT requests=N duration_us=N rps=X p50_us=N p90_us=N p99_us=N
--              max_us=N status_errors=N connect=N read=N write=N timeout=N
-- (status_errors is wrk's "Non-2xx or 3xx responses": statuses >= 400.)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local model = os.getenv("CHAT_MODEL") or "mock-model"
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32}'

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "WRK_RESULT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d max_us=%d status_errors=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
