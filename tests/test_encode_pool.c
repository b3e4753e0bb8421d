/*
 * test_encode_pool: the request-time encode pool (server/encode_pool.c) and the
 * slot limit (server/slots.c), on the reference kit's tiny model.
 *
 * The batching leader must hand over once its own input is done: with
 * producers that resubmit as soon as they are answered, the queue is never
 * empty, and a leader that led "until the queue is empty" did not return
 * until the others stopped (issue 12, item 4). What is counted is not time
 * but the batches a thread encodes itself during one call, by wrapping
 * clip_encode_texts (the link's --wrap): with one input per batch and FIFO
 * order, a leader encodes at most the inputs queued ahead of its own and
 * its own, so never more than PRODUCERS batches per call.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "encode_pool.h"
#include "slots.h"
#include "tap.h"

#define PRODUCERS 4
#define ROUNDS 150

static clip_model *model;
static encode_pool *enc;
static atomic_long answered;
static atomic_long worst;      /* most batches one thread encoded in one call */
static atomic_int failures;
static _Thread_local long batches_here;

int __real_clip_encode_texts(clip_ctx *c, int n, const int32_t *ids, float *out, clip_err *err);
int __wrap_clip_encode_texts(clip_ctx *c, int n, const int32_t *ids, float *out, clip_err *err);

/* Every text batch the pool runs, counted on the thread that runs it. */
int __wrap_clip_encode_texts(clip_ctx *c, int n, const int32_t *ids, float *out, clip_err *err)
{
	batches_here++;
	return __real_clip_encode_texts(c, n, ids, out, err);
}

static void *producer(void *arg)
{
	char text[64];
	float v[1024];
	api_err err;
	int id = (int)(intptr_t)arg;
	for (int i = 0; i < ROUNDS; i++) {
		snprintf(text, sizeof text, "producer %d text %d", id, i);
		const char *t = text;
		batches_here = 0;
		if (encode_pool_texts(enc, 1, &t, v, &err) != 0)
			atomic_fetch_add(&failures, 1);
		atomic_fetch_add(&answered, 1);
		long w = atomic_load(&worst);
		while (batches_here > w && !atomic_compare_exchange_weak(&worst, &w, batches_here))
			;
	}
	return NULL;
}

static void t_leader_hands_over(void)
{
	api_err err;
	REQUIRE(encode_pool_open(model, 1, 1, &enc, &err) == 0);
	pthread_t th[PRODUCERS];
	atomic_store(&answered, 0);
	atomic_store(&worst, 0);
	for (int i = 0; i < PRODUCERS; i++)
		REQUIRE(pthread_create(&th[i], NULL, producer, (void *)(intptr_t)i) == 0);
	for (int i = 0; i < PRODUCERS; i++)
		pthread_join(th[i], NULL);
	CHECK(atomic_load(&failures) == 0);
	CHECK(atomic_load(&answered) == PRODUCERS * ROUNDS);
	CHECKF(atomic_load(&worst) <= PRODUCERS,
	       "one call encoded %ld batches itself before it returned (at most %d: those "
	       "queued ahead of its own, and its own)", atomic_load(&worst), PRODUCERS);
	CHECK(atomic_load(&worst) >= 1); /* the wrap counts: some thread led */
	encode_pool_close(enc);
	enc = NULL;
}

/* Batched and one-by-one encodes agree: the handover loses no input and
 * mixes none up. */
static void t_batched_equals_single(void)
{
	api_err err;
	const char *texts[3] = {"a photo of a cat", "a red car", "a dog on a beach"};
	float all[3][1024], one[1024];
	REQUIRE(encode_pool_open(model, 1, 4, &enc, &err) == 0);
	int dim = clip_model_dim(model);
	REQUIRE(dim <= 1024);
	REQUIRE(encode_pool_texts(enc, 3, texts, &all[0][0], &err) == 0);
	/* encode_pool_texts packs the rows: row i at i * dim. */
	for (int i = 0; i < 3; i++) {
		REQUIRE(encode_pool_texts(enc, 1, &texts[i], one, &err) == 0);
		float d = 0;
		for (int k = 0; k < dim; k++)
			d += one[k] * (&all[0][0])[(size_t)i * dim + k];
		CHECKF(d > 0.9999f, "text %d: cosine %f between batched and single", i, d);
	}
	encode_pool_close(enc);
	enc = NULL;
}

static void t_slots_limit(void)
{
	slots s;
	REQUIRE(slots_init(&s, 2) == 0);
	CHECK(slots_take(&s, 0) == 1);
	CHECK(slots_take(&s, 0) == 1);
	CHECK(slots_busy(&s) == 2);
	CHECK(slots_take(&s, 0) == 0);   /* full, no wait */
	CHECK(slots_take(&s, 20) == 0);  /* full, a short wait */
	slots_give(&s);
	CHECK(slots_take(&s, 0) == 1);
	slots_give(&s);
	slots_give(&s);
	CHECK(slots_busy(&s) == 0);
	slots_destroy(&s);

	slots z;
	REQUIRE(slots_init(&z, 0) == 0); /* taken as 1 */
	CHECK(slots_take(&z, 0) == 1);
	CHECK(slots_take(&z, 0) == 0);
	slots_give(&z);
	slots_destroy(&z);
}

static slots handed = SLOTS_INITIALIZER(1);

static void *give_later(void *arg)
{
	(void)arg;
	struct timespec ts = {0, 50 * 1000 * 1000};
	nanosleep(&ts, NULL);
	slots_give(&handed);
	return NULL;
}

/* A waiter gets the slot given back while it waits. */
static void t_slots_wait_gets_slot(void)
{
	pthread_t t;
	REQUIRE(slots_take(&handed, 0) == 1);
	REQUIRE(pthread_create(&t, NULL, give_later, NULL) == 0);
	CHECK(slots_take(&handed, 60000) == 1);
	pthread_join(t, NULL);
	slots_give(&handed);
	CHECK(slots_busy(&handed) == 0);
}

int main(void)
{
	const char *ref = getenv("CLIPD_REFERENCE");
	char dir[600];
	clip_err ce;
	snprintf(dir, sizeof dir, "%s/tiny-clip-a", ref ? ref : "../shared/reference");
	if (clip_model_open(dir, &model, &ce) != CLIP_OK) {
		printf("Bail out! cannot open %s: %s\n", dir, ce.msg);
		return 1;
	}
	/* One BLAS thread per encode: the producers are the concurrency. */
	clip_set_threads(1);
	TAP_RUN(t_slots_limit);
	TAP_RUN(t_slots_wait_gets_slot);
	TAP_RUN(t_batched_equals_single);
	TAP_RUN(t_leader_hands_over);
	clip_model_close(model);
	return tap_done();
}
