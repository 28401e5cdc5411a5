/* test_metrics_route.c: unit tests for metrics_route (classifying requests to the metrics endpoint) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* A literal with its length, NULs included. */
#define LIT(s) (s), (sizeof(s) - 1)

static const char *route_name(enum metrics_route r)
{
	switch (r) {
	case ROUTE_INCOMPLETE:
		return "ROUTE_INCOMPLETE";
	case ROUTE_METRICS:
		return "ROUTE_METRICS";
	case ROUTE_HEALTH:
		return "ROUTE_HEALTH";
	case ROUTE_NOT_FOUND:
		return "ROUTE_NOT_FOUND";
	case ROUTE_BAD_METHOD:
		return "ROUTE_BAD_METHOD";
	case ROUTE_BAD_REQUEST:
		return "ROUTE_BAD_REQUEST";
	}
	return "(not a route)";
}

/* Routes the first len bytes of req from a heap copy of exactly len bytes, so
 * that valgrind and ASan see any read past the end. *head starts out true. */
static enum metrics_route route(const char *req, size_t len, bool *head)
{
	char *copy = malloc(len > 0 ? len : 1);
	assert_non_null(copy);
	if (len > 0)
		memcpy(copy, req, len);
	*head = true;
	enum metrics_route r = metrics_route(copy, len, head);
	free(copy);
	return r;
}

static void check_route(const char *req, size_t len, enum metrics_route want,
			bool want_head, const char *file, int at)
{
	bool head;
	enum metrics_route got = route(req, len, &head);
	if (got != want) {
		print_error("metrics_route(\"%.*s\") is %s, expected %s\n", (int)len, req,
			    route_name(got), route_name(want));
		_fail(file, at);
	}
	if (head != want_head) {
		print_error("metrics_route(\"%.*s\") set *head to %s\n", (int)len, req,
			    head ? "true" : "false");
		_fail(file, at);
	}
}
/* Takes a string literal; *head must end up false. */
#define assert_route(lit, want) check_route(LIT(lit), (want), false, __FILE__, __LINE__)
/* The same for a HEAD request: *head must end up true. */
#define assert_route_head(lit, want) check_route(LIT(lit), (want), true, __FILE__, __LINE__)

/* Every proper prefix of a request is INCOMPLETE; the whole of it is want. */
static void check_prefixes(const char *req, size_t len, enum metrics_route want,
			   bool want_head, const char *file, int at)
{
	for (size_t n = 0; n < len; n++) {
		bool head;
		enum metrics_route got = route(req, n, &head);
		if (got != ROUTE_INCOMPLETE || head) {
			print_error("the first %zu of %zu bytes give %s (head %d), expected "
				    "ROUTE_INCOMPLETE\n", n, len, route_name(got), head);
			_fail(file, at);
		}
	}
	check_route(req, len, want, want_head, file, at);
}
#define assert_prefixes(lit, want, head)                                       \
	check_prefixes(LIT(lit), (want), (head), __FILE__, __LINE__)

/* ---- good requests ---- */

static void test_get_metrics(void **state)
{
	(void)state;
	assert_route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ROUTE_METRICS);
	assert_route("GET /metrics HTTP/1.1\r\n\r\n", ROUTE_METRICS);
	assert_route("GET /metrics HTTP/1.0\r\n\r\n", ROUTE_METRICS);
	/* what Prometheus sends */
	assert_route("GET /metrics HTTP/1.1\r\n"
		     "Host: 10.0.0.1:9100\r\n"
		     "User-Agent: Prometheus/2.45.0\r\n"
		     "Accept: application/openmetrics-text;version=1.0.0;q=0.5,"
		     "text/plain;version=0.0.4;q=0.3,*/*;q=0.1\r\n"
		     "Accept-Encoding: gzip\r\n"
		     "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n"
		     "\r\n",
		     ROUTE_METRICS);
}

static void test_head(void **state)
{
	(void)state;
	assert_route_head("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ROUTE_METRICS);
	assert_route_head("HEAD /healthz HTTP/1.0\r\n\r\n", ROUTE_HEALTH);
	assert_route_head("HEAD /nothing HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
}

static void test_query_string(void **state)
{
	(void)state;
	assert_route("GET /metrics?name=x HTTP/1.1\r\n\r\n", ROUTE_METRICS);
	assert_route("GET /metrics? HTTP/1.1\r\n\r\n", ROUTE_METRICS);
	assert_route("GET /healthz?verbose=1 HTTP/1.1\r\n\r\n", ROUTE_HEALTH);
	assert_route_head("HEAD /metrics?x=y&z HTTP/1.1\r\n\r\n", ROUTE_METRICS);
}

static void test_healthz(void **state)
{
	(void)state;
	assert_route("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", ROUTE_HEALTH);
	assert_route("GET /healthz HTTP/1.0\n\n", ROUTE_HEALTH);
}

static void test_not_found(void **state)
{
	(void)state;
	assert_route("GET / HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /metricsx HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /metrics/ HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /metric HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /METRICS HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /healthzz HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET //metrics HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /favicon.ico HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /?/metrics HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
}

static void test_bad_method(void **state)
{
	(void)state;
	assert_route("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("PUT /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("DELETE /healthz HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("OPTIONS / HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("get /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("head /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("GETS /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("GE /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
	assert_route("HEADX /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD);
}

/* ---- line endings and the end of the head ---- */

static void test_incomplete(void **state)
{
	(void)state;
	assert_route("GET /metrics HTTP/1.1\r\nHost: x\r\n", ROUTE_INCOMPLETE);
	assert_route("GET /metrics HTTP/1.1\r\n", ROUTE_INCOMPLETE);
	assert_route("GET /metrics HTTP/1.1", ROUTE_INCOMPLETE);
	assert_route("GET /metrics HTTP/1.1\r\n\r", ROUTE_INCOMPLETE);
	assert_route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r", ROUTE_INCOMPLETE);
	/* a lone CR is not a line end */
	assert_route("GET /metrics HTTP/1.1\r\r", ROUTE_INCOMPLETE);
	/* junk is only judged once the head has ended */
	assert_route("GARBAGE", ROUTE_INCOMPLETE);
	assert_route("GARBAGE\r\n", ROUTE_INCOMPLETE);
}

static void test_lf_line_endings(void **state)
{
	(void)state;
	assert_route("GET /metrics HTTP/1.1\n\n", ROUTE_METRICS);
	assert_route("GET /metrics HTTP/1.1\nHost: x\n\n", ROUTE_METRICS);
	assert_route("GET /metrics HTTP/1.1\r\nHost: x\n\n", ROUTE_METRICS);
	assert_route("GET /metrics HTTP/1.1\nHost: x\r\n\r\n", ROUTE_METRICS);
	assert_route("GET /metrics HTTP/1.1\n\r\n", ROUTE_METRICS);
	assert_route_head("HEAD /healthz HTTP/1.1\n\n", ROUTE_HEALTH);
}

static void test_bytes_after_head(void **state)
{
	(void)state;
	/* a body or a pipelined request after the head does not matter */
	assert_route("GET /metrics HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", ROUTE_METRICS);
	assert_route("POST /metrics HTTP/1.1\r\n\r\nbody", ROUTE_BAD_METHOD);
	assert_route("GET /metrics HTTP/1.1\r\n\r\n\0\0\0", ROUTE_METRICS);
}

static void test_every_prefix(void **state)
{
	(void)state;
	assert_prefixes("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ROUTE_METRICS, false);
	assert_prefixes("GET /metrics HTTP/1.1\nHost: x\n\n", ROUTE_METRICS, false);
	assert_prefixes("HEAD /healthz HTTP/1.0\r\n\r\n", ROUTE_HEALTH, true);
	assert_prefixes("GET /metrics?name=x HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
			ROUTE_METRICS, false);
	assert_prefixes("GET / HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND, false);
	assert_prefixes("POST /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_METHOD, false);
	assert_prefixes("GARBAGE\r\n\r\n", ROUTE_BAD_REQUEST, false);
}

/* ---- junk ---- */

static void test_bad_request_line(void **state)
{
	(void)state;
	assert_route("GARBAGE\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET \r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET  HTTP/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics\r\n\r\n", ROUTE_BAD_REQUEST);      /* HTTP/0.9 */
	assert_route("GET /metrics \r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP/2.0\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP/1.1x\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP/1.2\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP/1.\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics http/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP/1.1 \r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics  HTTP/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP/1.1\r\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route(" GET /metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("\n\n", ROUTE_BAD_REQUEST);
	/* the request line is judged before the method */
	assert_route("POST metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("HEAD /metrics HTTP/2\r\n\r\n", ROUTE_BAD_REQUEST);
	/* TLS to a plain HTTP port */
	assert_route("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", ROUTE_BAD_REQUEST);
}

static void test_binary(void **state)
{
	(void)state;
	assert_route("\0\0\0\0\n\n", ROUTE_BAD_REQUEST);
	assert_route("\0\n\0\n\n", ROUTE_BAD_REQUEST);
	assert_route("\xff\xfe\xfd\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET\0/metrics HTTP/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics\0HTTP/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP/1.\0\r\n\r\n", ROUTE_BAD_REQUEST);
	assert_route("GET /metrics HTTP\0/1.1\r\n\r\n", ROUTE_BAD_REQUEST);
	/* a NUL inside the path is not /metrics */
	assert_route("GET /metrics\0 HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	assert_route("GET /met\0rics HTTP/1.1\r\n\r\n", ROUTE_NOT_FOUND);
	/* NULs and no blank line: still waiting */
	assert_route("\0\0\0\0\0\0\0\0", ROUTE_INCOMPLETE);
	assert_route("GET /metrics HTTP/1.1\r\n\0\r\n", ROUTE_INCOMPLETE);
}

static void test_tiny_buffers(void **state)
{
	(void)state;
	bool head;

	assert_route("", ROUTE_INCOMPLETE);
	assert_route("\n", ROUTE_INCOMPLETE);
	assert_route("\r", ROUTE_INCOMPLETE);
	assert_route("\r\n", ROUTE_INCOMPLETE);
	assert_route("\n\r", ROUTE_INCOMPLETE);
	assert_route("G", ROUTE_INCOMPLETE);

	/* only len bytes count, whatever follows them */
	assert_int_equal(route("\n\nGET", 1, &head), ROUTE_INCOMPLETE);
	assert_int_equal(metrics_route("GET /metrics HTTP/1.1\r\n\r\n", 24, &head),
			 ROUTE_INCOMPLETE);
}

static void test_full_buffer_without_end(void **state)
{
	(void)state;
	/* what the server holds when a client fills METRICS_REQUEST_MAX */
	char *req = malloc(METRICS_REQUEST_MAX);
	bool head;
	assert_non_null(req);
	memset(req, 'A', METRICS_REQUEST_MAX);
	assert_int_equal(metrics_route(req, METRICS_REQUEST_MAX, &head), ROUTE_INCOMPLETE);

	static const char line[] = "GET /metrics HTTP/1.1\r\nX: ";
	memcpy(req, line, sizeof(line) - 1);
	assert_int_equal(metrics_route(req, METRICS_REQUEST_MAX, &head), ROUTE_INCOMPLETE);

	/* the blank line as the very last bytes */
	memcpy(req + METRICS_REQUEST_MAX - 4, "\r\n\r\n", 4);
	assert_int_equal(metrics_route(req, METRICS_REQUEST_MAX, &head), ROUTE_METRICS);
	assert_int_equal(metrics_route(req, METRICS_REQUEST_MAX - 1, &head), ROUTE_INCOMPLETE);
	free(req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_metrics),
		cmocka_unit_test(test_head),
		cmocka_unit_test(test_query_string),
		cmocka_unit_test(test_healthz),
		cmocka_unit_test(test_not_found),
		cmocka_unit_test(test_bad_method),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_lf_line_endings),
		cmocka_unit_test(test_bytes_after_head),
		cmocka_unit_test(test_every_prefix),
		cmocka_unit_test(test_bad_request_line),
		cmocka_unit_test(test_binary),
		cmocka_unit_test(test_tiny_buffers),
		cmocka_unit_test(test_full_buffer_without_end),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
