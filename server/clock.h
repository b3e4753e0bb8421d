/*
 * clock: the daemon's one monotonic clock, for durations, deadlines and
 * uptime. It never jumps with the wall clock (NTP, an administrator's
 * date), so an interval measured on it is never negative. Not for anything
 * stored or shown as a date: created_ms and updated_ms are wall-clock
 * milliseconds from the store (store_now_ms, CLOCK_REALTIME), and log
 * lines carry their own UTC time (log.c). Thread-safe.
 */
#ifndef CLIPD_CLOCK_H
#define CLIPD_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds of CLOCK_MONOTONIC (since an arbitrary point). */
static inline int64_t clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Seconds of the same clock, with sub-millisecond precision: the
 * durations of the metrics histograms. */
static inline double clock_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
