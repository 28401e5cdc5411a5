/* parse.c: config values: durations, counts, booleans, lists */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "parse.h"

#define DURATION_MAX_SEC (7.0 * 24 * 3600)
#define DURATION_MIN_SEC 0.001 /* the event loop's timers resolve no finer */

static const struct {
	const char *suffix;
	double seconds;
} duration_units[] = {
	{ "ms", 0.001 }, { "s", 1.0 }, { "m", 60.0 }, { "h", 3600.0 }, { "", 1.0 },
};

int parse_duration(const char *s, double *out, const char **err)
{
	size_t digits = strspn(s, "0123456789.");
	size_t dots = 0;
	char number[32];

	for (size_t i = 0; i < digits; i++)
		dots += s[i] == '.';
	if (digits == 0 || digits >= sizeof(number) || s[0] == '.' || dots > 1) {
		*err = "bad duration (expected e.g. 500ms, 5s, 15m, 1h)";
		return -1;
	}
	memcpy(number, s, digits);
	number[digits] = '\0';
	double v = strtod(number, NULL);
	for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
		if (strcmp(s + digits, duration_units[i].suffix) != 0)
			continue;
		v *= duration_units[i].seconds;
		if (v <= 0) {
			*err = "duration must be greater than zero";
			return -1;
		}
		if (v < DURATION_MIN_SEC) {
			*err = "duration too short (at least 1ms)";
			return -1;
		}
		if (v > DURATION_MAX_SEC) {
			*err = "duration too long (at most 168h)";
			return -1;
		}
		*out = v;
		return 0;
	}
	*err = "bad duration unit (use ms, s, m or h)";
	return -1;
}

int parse_uint(const char *s, unsigned long min, unsigned long max,
	       unsigned long *out, const char **err)
{
	char *end;
	unsigned long v;

	if (s[0] < '0' || s[0] > '9') {
		*err = "not a number";
		return -1;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end != '\0') {
		*err = "not a number";
		return -1;
	}
	if (errno == ERANGE || v < min || v > max) {
		*err = "out of range";
		return -1;
	}
	*out = v;
	return 0;
}

int parse_bool(const char *s, bool *out, const char **err)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	*err = "expected yes or no";
	return -1;
}

int parse_list(const char *s, int (*fn)(const char *item, void *ctx), void *ctx,
	       const char **err)
{
	char item[PARSE_ITEM_MAX + 1];
	int n = 0;

	*err = NULL;
	for (;;) {
		s += strspn(s, PARSE_LIST_SEP);
		size_t len = strcspn(s, PARSE_LIST_SEP);
		if (len == 0)
			return n;
		if (len > PARSE_ITEM_MAX) {
			*err = "list entry too long";
			return -1;
		}
		memcpy(item, s, len);
		item[len] = '\0';
		if (fn(item, ctx) != 0)
			return -1;
		n++;
		s += len;
	}
}
