/* slots.c: a counting limit with a bounded wait (CLOCK_MONOTONIC). */
#include <errno.h>
#include <time.h>

#include "slots.h"

int slots_init(slots *s, int max)
{
	int rc;
	s->busy = 0;
	s->max = max > 0 ? max : 1;
	if ((rc = pthread_mutex_init(&s->mu, NULL)))
		return rc;
	if ((rc = pthread_cond_init(&s->cv, NULL)))
		pthread_mutex_destroy(&s->mu);
	return rc;
}

void slots_destroy(slots *s)
{
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
}

int slots_take(slots *s, int wait_ms)
{
	struct timespec until;
	int rc = 0;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&s->mu);
	while (s->busy >= s->max && rc != ETIMEDOUT)
		rc = pthread_cond_clockwait(&s->cv, &s->mu, CLOCK_MONOTONIC, &until);
	int got = s->busy < s->max;
	if (got)
		s->busy++;
	pthread_mutex_unlock(&s->mu);
	return got;
}

void slots_give(slots *s)
{
	pthread_mutex_lock(&s->mu);
	s->busy--;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

int slots_busy(slots *s)
{
	pthread_mutex_lock(&s->mu);
	int n = s->busy;
	pthread_mutex_unlock(&s->mu);
	return n;
}
