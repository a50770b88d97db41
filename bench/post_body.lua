-- wrk script: POST one prebuilt body to the URL and print a machine-readable summary.
-- The harness passes the body file and its content type through the environment
-- (BENCH_BODY_FILE, BENCH_CONTENT_TYPE), so the request is static and wrk builds it only once.
-- summary.errors.status counts responses with status >= 400 (wrk's "Non-2xx or 3xx responses").

local file = assert(io.open(assert(os.getenv("BENCH_BODY_FILE")), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = assert(os.getenv("BENCH_CONTENT_TYPE"))

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, ' ..
      '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max))
end
