-- bench.lua: wrk reporter for contrib/bench/bench.sh.
-- It adds no request() or response() hook (those would slow wrk down); it only
-- prints one machine-readable line at the end, which bench_helper.py parses.
-- Latencies are in microseconds, durations in microseconds, bytes as received.
done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
		"WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
		"\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d," ..
		"\"err_status\":%d,\"err_timeout\":%d," ..
		"\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"p999_us\":%.0f," ..
		"\"mean_us\":%.1f,\"max_us\":%.0f}\n",
		summary.requests, summary.duration, summary.bytes,
		e.connect, e.read, e.write, e.status, e.timeout,
		latency:percentile(50), latency:percentile(90),
		latency:percentile(99), latency:percentile(99.9),
		latency.mean, latency.max))
end
