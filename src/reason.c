/* reason.c: why a connection or a UDP flow ended, for the log and the metrics */
#include "autoconfig.h"

#include <errno.h>
#include <stddef.h>

#include "reason.h"

static const struct {
	const char *name;
	const char *backend_label;
} reasons[END_REASON_COUNT] = {
	[END_CLOSED] = { "closed", NULL },
	[END_CLIENT_RESET] = { "client-reset", NULL },
	[END_BACKEND_RESET] = { "backend-reset", "reset" },
	[END_CONNECT_REFUSED] = { "connect-refused", "refused" },
	[END_CONNECT_TIMEOUT] = { "connect-timeout", "timeout" },
	[END_CONNECT_UNREACHABLE] = { "connect-unreachable", "unreachable" },
	[END_CONNECT_FAILED] = { "connect-failed", "failed" },
	[END_IDLE_TIMEOUT] = { "idle-timeout", NULL },
	[END_REMOVED] = { "removed", NULL },
	[END_SHUTDOWN] = { "shutdown", NULL },
	[END_ERROR] = { "error", NULL },
};

const char *reason_name(enum end_reason r)
{
	return reasons[r].name;
}

const char *reason_backend_label(enum end_reason r)
{
	return reasons[r].backend_label;
}

enum end_reason reason_of_connect_error(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return END_CONNECT_REFUSED;
	case ETIMEDOUT:
		return END_CONNECT_TIMEOUT;
	case ENETUNREACH:
	case EHOSTUNREACH:
		return END_CONNECT_UNREACHABLE;
	default:
		return END_CONNECT_FAILED;
	}
}
