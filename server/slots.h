/*
 * slots: a counting limit with a bounded wait. At most max holders at a
 * time; slots_take waits up to wait_ms for a free slot and says whether it
 * got one. Used where a request may start heavy work (a decode, a
 * thumbnail) so that a flood of requests queues for a bounded time and
 * then gets a 503, instead of running without bound.
 *
 * Thread-safety: every function but slots_init and slots_destroy may be
 * called from any thread. Waits are timed on CLOCK_MONOTONIC.
 */
#ifndef CLIPD_SLOTS_H
#define CLIPD_SLOTS_H

#include <pthread.h>

typedef struct slots {
	pthread_mutex_t mu;
	pthread_cond_t cv;     /* signalled when a slot is given back */
	int busy, max;
} slots;

/* A static one: static slots s = SLOTS_INITIALIZER(4); */
#define SLOTS_INITIALIZER(n) {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, (n)}

/* max >= 1 (less is taken as 1). Returns 0, or an errno value. */
int slots_init(slots *s, int max);
void slots_destroy(slots *s);

/* Takes a slot, waiting at most wait_ms (0: no wait). Returns 1 when
 * taken (give it back with slots_give), 0 when none came free in time. */
int slots_take(slots *s, int wait_ms);
void slots_give(slots *s);

/* Slots taken now. */
int slots_busy(slots *s);

#endif
