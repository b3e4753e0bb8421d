/*
 * tap.h: a small TAP producer for the C tests. Each test case is a function;
 * CHECK records a failure with its location and goes on, so one run reports
 * every broken assertion. meson reads the output with protocol 'tap'.
 *
 *     static void t_something(void) { CHECK(1 + 1 == 2); }
 *     int main(void) { TAP_RUN(t_something); return tap_done(); }
 */
#ifndef CLIPD_TAP_H
#define CLIPD_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_n, tap_failed, tap_case_failed;

static void tap_diag(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), unused));

static void tap_diag(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("# %s:%d: ", file, line);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	tap_case_failed = 1;
}

/* CHECK(cond): fails the current case when cond is false. */
#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			tap_diag(__FILE__, __LINE__, "CHECK(%s) failed", #cond);                   \
	} while (0)

/* CHECKF(cond, fmt, ...): the same with a message. */
#define CHECKF(cond, ...)                                                                          \
	do {                                                                                       \
		if (!(cond))                                                                       \
			tap_diag(__FILE__, __LINE__, __VA_ARGS__);                                 \
	} while (0)

/* REQUIRE(cond): fails the case and returns from it. */
#define REQUIRE(cond)                                                                              \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			tap_diag(__FILE__, __LINE__, "REQUIRE(%s) failed", #cond);                 \
			return;                                                                    \
		}                                                                                  \
	} while (0)

#define TAP_RUN(fn)                                                                                \
	do {                                                                                       \
		tap_case_failed = 0;                                                               \
		fflush(stdout);                                                                    \
		fn();                                                                              \
		tap_n++;                                                                           \
		if (tap_case_failed)                                                               \
			tap_failed++;                                                              \
		printf("%s %d - %s\n", tap_case_failed ? "not ok" : "ok", tap_n, #fn);             \
		fflush(stdout);                                                                    \
	} while (0)

/* TAP_SKIP(fn, why): reports fn as skipped, with the reason. */
#define TAP_SKIP(fn, why)                                                                          \
	do {                                                                                       \
		tap_n++;                                                                           \
		printf("ok %d - %s # SKIP %s\n", tap_n, #fn, why);                                \
		fflush(stdout);                                                                    \
	} while (0)

static int tap_done(void) __attribute__((unused));
static int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
