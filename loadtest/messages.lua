-- wrk script: POST a small, non-streaming Anthropic Messages request.
-- Used by loadtest/run's "translate" scenario against shardgate, whose
-- model `claude-mock` routes to the OpenAI mock provider: every request is
-- translated Anthropic -> OpenAI Chat and every answer back.
--
-- At the end it prints the same machine-readable line as loadtest/chat.lua:
--   WRK_RESULT requests=N duration_us=N rps=X p50_us=N p90_us=N p99_us=N
--              max_us=N status_errors=N connect=N read=N write=N timeout=N
-- (status_errors is wrk's "Non-2xx or 3xx responses": statuses >= 400.)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"claude-mock","max_tokens":32,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "WRK_RESULT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d max_us=%d status_errors=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
