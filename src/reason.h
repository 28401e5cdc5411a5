/* reason.h: why a connection or a UDP flow ended, for the log and the metrics */
#ifndef DUALPROXY_REASON_H
#define DUALPROXY_REASON_H

enum end_reason {
	END_CLOSED,              /* both sides closed normally */
	END_CLIENT_RESET,        /* the client reset or vanished */
	END_BACKEND_RESET,       /* the backend reset after it had accepted */
	END_CONNECT_REFUSED,     /* the backend refused (RST or ICMP port unreachable) */
	END_CONNECT_TIMEOUT,     /* no answer within connect_timeout */
	END_CONNECT_UNREACHABLE, /* no route to the backend */
	END_CONNECT_FAILED,      /* any other connect error, or no descriptor left */
	END_IDLE_TIMEOUT,        /* nothing moved for idle_timeout */
	END_REMOVED,             /* a reload removed the service (UDP flows) */
	END_SHUTDOWN,            /* ended by the drain or a second SIGTERM */
	END_ERROR,               /* a local error (logged as a warning) */
	END_REASON_COUNT,
};

/* The log's name: "closed", "client-reset", "connect-refused", ... */
const char *reason_name(enum end_reason r);

/* The reason label of dualproxy_backend_errors_total ("refused",
 * "timeout", "unreachable", "failed", "reset"), or NULL when the backend
 * is not at fault. */
const char *reason_backend_label(enum end_reason r);

/* How a failed connect (its errno) ends a connection. */
enum end_reason reason_of_connect_error(int err);

#endif
