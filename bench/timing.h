/*
 * What every benchmark program here needs: a monotonic clock in seconds
 * and the comparison qsort takes to sort timings.
 */
#ifndef CLIPD_BENCH_TIMING_H
#define CLIPD_BENCH_TIMING_H

#include <time.h>

static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

#endif
