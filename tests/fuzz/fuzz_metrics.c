/* fuzz_metrics.c: libFuzzer harness for metrics_route (classifying a metrics request head) */
#include "autoconfig.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_check.h"
#include "metrics.h"

#define HEAD_METHOD "HEAD "
#define BLANK_LINE_TAIL "\n\n" /* appended to end any head */

struct routed {
	enum metrics_route route;
	bool head;
};

/* Routes a heap copy of exactly len bytes (a + b), so ASan sees a read past
 * the end; *head starts out true to show that it is always set. */
static struct routed route(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	struct routed r = { .head = true };
	char *req = malloc(alen + blen);
	if (req == NULL && alen + blen > 0)
		abort();
	if (alen > 0)
		memcpy(req, a, alen);
	if (blen > 0)
		memcpy(req + alen, b, blen);
	r.route = metrics_route(req, alen + blen, &r.head);
	FUZZ_CHECK((int)r.route >= ROUTE_INCOMPLETE && (int)r.route <= ROUTE_BAD_REQUEST,
		   "route %d is not in the enum", (int)r.route);
	FUZZ_CHECK(!r.head || r.route == ROUTE_METRICS || r.route == ROUTE_HEALTH ||
		   r.route == ROUTE_NOT_FOUND, "*head set for route %d", (int)r.route);
	FUZZ_CHECK(!r.head || (alen + blen >= strlen(HEAD_METHOD) &&
			       memcmp(req, HEAD_METHOD, strlen(HEAD_METHOD)) == 0),
		   "*head set for a request that is not HEAD");
	free(req);
	return r;
}

/* Where the head ends as metrics.h describes it: after the first empty line
 * ("\n\n" or "\n\r\n"); 0 if it has not ended. */
static size_t head_length(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i + 1 < size; i++) {
		if (data[i] != '\n')
			continue;
		if (data[i + 1] == '\n')
			return i + 2;
		if (i + 2 < size && data[i + 1] == '\r' && data[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > METRICS_REQUEST_MAX)
		return 0; /* the endpoint never passes more */

	struct routed whole = route(data, size, NULL, 0);
	size_t end = head_length(data, size);
	if (end == 0) {
		FUZZ_CHECK(whole.route == ROUTE_INCOMPLETE,
			   "route %d before the head ended", (int)whole.route);
		/* ending the head makes it complete */
		struct routed ended = route(data, size, (const uint8_t *)BLANK_LINE_TAIL,
					    strlen(BLANK_LINE_TAIL));
		FUZZ_CHECK(ended.route != ROUTE_INCOMPLETE, "still incomplete after \\n\\n");
		return 0;
	}
	FUZZ_CHECK(whole.route != ROUTE_INCOMPLETE, "incomplete, yet the head ended at %zu",
		   end);

	/* the head alone, and the head with anything after it, route the same */
	struct routed head = route(data, end, NULL, 0);
	FUZZ_CHECK(head.route == whole.route && head.head == whole.head,
		   "the head alone routes %d (head %d), with %zu more bytes %d (head %d)",
		   (int)head.route, head.head, size - end, (int)whole.route, whole.head);
	struct routed more = route(data, size, data, size);
	FUZZ_CHECK(more.route == whole.route && more.head == whole.head,
		   "appending the input again changes route %d to %d", (int)whole.route,
		   (int)more.route);
	/* one byte less and the head has not ended */
	struct routed cut = route(data, end - 1, NULL, 0);
	FUZZ_CHECK(cut.route == ROUTE_INCOMPLETE && !cut.head,
		   "route %d before the last byte of the head", (int)cut.route);
	return 0;
}
