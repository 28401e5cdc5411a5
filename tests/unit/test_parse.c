/* test_parse.c: unit tests for parse.c (durations, unsigned integers, booleans) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "parse.h"

#define SECONDS_EPSILON 1e-9

/* parse_duration(s) must succeed with want seconds. */
static void duration_is(const char *s, double want)
{
	double v = -1.0;
	const char *err = NULL;

	if (parse_duration(s, &v, &err) != 0)
		fail_msg("parse_duration(\"%s\") failed: %s", s, err ? err : "(no message)");
	if (v < want - SECONDS_EPSILON || v > want + SECONDS_EPSILON)
		fail_msg("parse_duration(\"%s\") = %.9f, expected %.9f", s, v, want);
}

/* parse_duration(s) must fail with a message and leave *out alone; returns it. */
static const char *duration_fails(const char *s)
{
	double v = 42.0;
	const char *err = NULL;

	if (parse_duration(s, &v, &err) != -1)
		fail_msg("parse_duration(\"%s\") succeeded (%.9f), expected an error", s, v);
	if (err == NULL || err[0] == '\0')
		fail_msg("parse_duration(\"%s\") failed without a message", s);
	if (v != 42.0)
		fail_msg("parse_duration(\"%s\") wrote %.9f on error", s, v);
	return err;
}

/* ---- parse_duration ---- */

static void test_duration_units(void **state)
{
	(void)state;
	duration_is("500ms", 0.5);
	duration_is("250ms", 0.25);
	duration_is("1ms", 0.001);
	duration_is("5s", 5.0);
	duration_is("5", 5.0);
	duration_is("15m", 900.0);
	duration_is("1h", 3600.0);
	duration_is("1.5s", 1.5);
	duration_is("0.5m", 30.0);
	duration_is("30s", 30.0);
}

static void test_duration_upper_bound(void **state)
{
	(void)state;
	/* at most a week, inclusive */
	duration_is("168h", 7 * 24 * 3600.0);
	duration_is("10080m", 7 * 24 * 3600.0);
	duration_is("604800", 7 * 24 * 3600.0);
	duration_is("604800s", 7 * 24 * 3600.0);
	assert_non_null(strstr(duration_fails("169h"), "too long"));
	assert_non_null(strstr(duration_fails("604801s"), "too long"));
	assert_non_null(strstr(duration_fails("10081m"), "too long"));
	assert_non_null(strstr(duration_fails("604800001ms"), "too long"));
}

static void test_duration_zero(void **state)
{
	(void)state;
	assert_non_null(strstr(duration_fails("0s"), "greater than zero"));
	assert_non_null(strstr(duration_fails("0"), "greater than zero"));
	assert_non_null(strstr(duration_fails("0ms"), "greater than zero"));
	assert_non_null(strstr(duration_fails("0.0h"), "greater than zero"));
}

/* The event loop's timers resolve milliseconds: less could never work. */
static void test_duration_lower_bound(void **state)
{
	(void)state;
	duration_is("1ms", 0.001);
	duration_is("0.001s", 0.001);
	duration_is("1.5ms", 0.0015);
	assert_non_null(strstr(duration_fails("0.0000001ms"), "too short (at least 1ms)"));
	assert_non_null(strstr(duration_fails("0.5ms"), "too short"));
	assert_non_null(strstr(duration_fails("0.999ms"), "too short"));
	assert_non_null(strstr(duration_fails("0.0009s"), "too short"));
	assert_non_null(strstr(duration_fails("0.0000001"), "too short"));
	assert_non_null(strstr(duration_fails("0.00000000000000000000000000001h"), "too short"));
}

static void test_duration_garbage(void **state)
{
	(void)state;
	duration_fails("");
	duration_fails("abc");
	duration_fails("ms");
	duration_fails("s");
	duration_fails("-1s");
	duration_fails("-1");
	duration_fails("+1s");
	duration_fails(".5s");
	duration_fails(" 5s");
	duration_fails("inf");
	duration_fails("nan");
	duration_fails("1e999s"); /* overflows a double */
}

static void test_duration_bad_unit(void **state)
{
	(void)state;
	assert_non_null(strstr(duration_fails("5x"), "unit"));
	assert_non_null(strstr(duration_fails("5 s"), "unit"));
	assert_non_null(strstr(duration_fails("5s "), "unit"));
	assert_non_null(strstr(duration_fails("5S"), "unit"));
	assert_non_null(strstr(duration_fails("5sec"), "unit"));
	assert_non_null(strstr(duration_fails("5d"), "unit"));
	assert_non_null(strstr(duration_fails("5mss"), "unit"));
	assert_non_null(strstr(duration_fails("1h30m"), "unit"));
}

/* ---- parse_uint ---- */

static void test_uint_ok(void **state)
{
	(void)state;
	unsigned long v = 0;
	const char *err = NULL;

	assert_int_equal(parse_uint("1", 1, 10, &v, &err), 0);
	assert_int_equal(v, 1);
	assert_int_equal(parse_uint("10", 1, 10, &v, &err), 0);
	assert_int_equal(v, 10);
	assert_int_equal(parse_uint("20000", 1, 10000000, &v, &err), 0);
	assert_int_equal(v, 20000);
	assert_int_equal(parse_uint("0", 0, 5, &v, &err), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_uint("007", 0, 10, &v, &err), 0);
	assert_int_equal(v, 7);
	assert_int_equal(parse_uint("18446744073709551615", 0, ULONG_MAX, &v, &err), 0);
	assert_true(v == ULONG_MAX);
}

static void test_uint_range(void **state)
{
	(void)state;
	unsigned long v = 99;
	const char *err;

	err = NULL;
	assert_int_equal(parse_uint("0", 1, 10, &v, &err), -1);
	assert_string_equal(err, "out of range");
	err = NULL;
	assert_int_equal(parse_uint("11", 1, 10, &v, &err), -1);
	assert_string_equal(err, "out of range");
	err = NULL;
	assert_int_equal(parse_uint("10000001", 1, 10000000, &v, &err), -1);
	assert_string_equal(err, "out of range");
	err = NULL;
	assert_int_equal(parse_uint("99999999999999999999999", 0, ULONG_MAX, &v, &err), -1);
	assert_string_equal(err, "out of range");
	err = NULL;
	assert_int_equal(parse_uint("18446744073709551616", 0, ULONG_MAX, &v, &err), -1);
	assert_string_equal(err, "out of range");
	assert_int_equal(v, 99); /* untouched on error */
}

static void test_uint_garbage(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "abc", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "12abc", "1,000",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		unsigned long v = 99;
		const char *err = NULL;
		if (parse_uint(bad[i], 0, ULONG_MAX, &v, &err) != -1)
			fail_msg("parse_uint(\"%s\") succeeded", bad[i]);
		assert_non_null(err);
		assert_string_equal(err, "not a number");
		assert_int_equal(v, 99);
	}
}

/* ---- parse_bool ---- */

static void test_bool_ok(void **state)
{
	(void)state;
	static const char *const yes[] = { "yes", "true", "on", "1", "YES", "Yes", "TRUE", "On" };
	static const char *const no[] = { "no", "false", "off", "0", "NO", "No", "FALSE", "oFF" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		bool v = false;
		const char *err = NULL;
		if (parse_bool(yes[i], &v, &err) != 0 || !v)
			fail_msg("parse_bool(\"%s\") is not true", yes[i]);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		bool v = true;
		const char *err = NULL;
		if (parse_bool(no[i], &v, &err) != 0 || v)
			fail_msg("parse_bool(\"%s\") is not false", no[i]);
	}
}

static void test_bool_junk(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "y", "n", "yess", "nope", "2", "-1", "01", " yes", "yes ", "enabled",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool v = true;
		const char *err = NULL;
		if (parse_bool(bad[i], &v, &err) != -1)
			fail_msg("parse_bool(\"%s\") succeeded", bad[i]);
		assert_non_null(err);
		assert_true(v); /* untouched on error */
	}
}

/* ---- parse_list ---- */

struct collected {
	char items[8][PARSE_ITEM_MAX + 1];
	int n;
	int fail_at; /* fn fails on this entry (1-based); 0: never */
};

static int collect(const char *item, void *ctx)
{
	struct collected *c = ctx;
	if (++c->n == c->fail_at)
		return -1;
	assert_true(c->n <= 8);
	snprintf(c->items[c->n - 1], sizeof(c->items[0]), "%s", item);
	return 0;
}

static void test_list_separators(void **state)
{
	(void)state;
	static const char *const lists[] = {
		"a,b,c", "a b c", "a, b, c", " a\tb\nc ", ",,a,,b,,c,,", "a\r\nb\r\nc\r\n",
		"\na\n\nb\n\nc", "a ,\n b\v,\fc",
	};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		struct collected c = { .n = 0 };
		const char *err = "unset";
		assert_int_equal(parse_list(lists[i], collect, &c, &err), 3);
		assert_null(err);
		assert_string_equal(c.items[0], "a");
		assert_string_equal(c.items[1], "b");
		assert_string_equal(c.items[2], "c");
	}
}

static void test_list_empty_and_errors(void **state)
{
	(void)state;
	struct collected c = { .n = 0 };
	const char *err;

	assert_int_equal(parse_list("", collect, &c, &err), 0);
	assert_int_equal(parse_list(" ,\n\t, ", collect, &c, &err), 0);
	assert_int_equal(c.n, 0);

	/* fn's failure stops the list; the caller reported it */
	c = (struct collected){ .fail_at = 2 };
	assert_int_equal(parse_list("a,b,c", collect, &c, &err), -1);
	assert_null(err);
	assert_int_equal(c.n, 2);

	/* an entry longer than PARSE_ITEM_MAX is an error, not cut */
	char long_item[PARSE_ITEM_MAX + 8];
	memset(long_item, 'x', sizeof(long_item) - 1);
	long_item[sizeof(long_item) - 1] = '\0';
	c = (struct collected){ .n = 0 };
	assert_int_equal(parse_list(long_item, collect, &c, &err), -1);
	assert_non_null(err);
	assert_int_equal(c.n, 0);
	long_item[PARSE_ITEM_MAX] = '\0'; /* exactly the maximum: fine */
	assert_int_equal(parse_list(long_item, collect, &c, &err), 1);
	assert_int_equal(strlen(c.items[0]), PARSE_ITEM_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration_units),
		cmocka_unit_test(test_duration_upper_bound),
		cmocka_unit_test(test_duration_zero),
		cmocka_unit_test(test_duration_lower_bound),
		cmocka_unit_test(test_duration_garbage),
		cmocka_unit_test(test_duration_bad_unit),
		cmocka_unit_test(test_uint_ok),
		cmocka_unit_test(test_uint_range),
		cmocka_unit_test(test_uint_garbage),
		cmocka_unit_test(test_bool_ok),
		cmocka_unit_test(test_bool_junk),
		cmocka_unit_test(test_list_separators),
		cmocka_unit_test(test_list_empty_and_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
