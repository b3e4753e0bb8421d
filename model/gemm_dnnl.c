/*
 * gemm_dnnl.c: the linear layers on oneDNN (see gemm_int.h), in float32,
 * bfloat16 or int8.
 *
 * At load, mm_pack converts a layer's weights once into the blocked layout
 * oneDNN's kernels for this CPU read (it picks the layout; we ask with
 * format "any" and reorder into it). At run time a product needs a
 * primitive for its exact row count: oneDNN 2.6 runs a runtime row count
 * only on its slow reference kernel, so primitives are made on first use
 * of each row count and kept with the layer (a text batch of 7 tokens and
 * one of 12 are different primitives; both are reused from then on).
 *
 * What runs inside the product, as oneDNN post-ops, instead of as passes
 * of our own over memory: the bias, QuickGELU (swish with alpha 1.702) or
 * GELU, and the residual add (sum post-op: y += result).
 *
 * bf16: the input rows are rounded to bfloat16 here (round to nearest
 * even), products accumulate in float32 and are written as float32.
 *
 * int8: weights get one scale per output channel (max |w| / 127, symmetric),
 * baked into the primitive as output scales. Activations get one scale per
 * row, computed from the input at run time (max |x| / 127). oneDNN 2.6
 * keeps its fast kernels only for a scale per product (runtime output
 * scales, or a binary multiply by a per-row tensor, fall back to its
 * reference kernel: measured), and one scale per product left int8 ranking
 * 10,000 items at recall@10 0.856 against f32 where per row gives 0.928
 * (tests/test_precision.c). So the product is written unscaled along rows
 * and one pass of our own (int8_epilogue) applies the row scales, the bias,
 * the activation and the residual add.
 *
 * Threads: a product's rows go out in chunks (rows_part) to the calling
 * thread and gemm.c's helper (mm_parallel); each chunk is one
 * single-threaded oneDNN call that converts its rows first (and, for int8,
 * applies its epilogue after): one hand-off per product. oneDNN's own
 * threads (Debian builds it on OpenMP) would wake from sleep on every call
 * when OpenMP is passive, which clipd needs for FAISS: 30-50 us a wake on
 * this KVM guest, ~150 wakes per short text, so that a 7-token text ran
 * faster on one thread than on two. Our helper spins briefly between jobs
 * instead (gemm.c). (Splitting the output columns instead would need a
 * strided destination, which oneDNN 2.6 runs on its slow gemm:jit path:
 * measured.) Each thread has its own stream, memory objects and scratch
 * buffers (thread-specific data, freed when the thread ends), and
 * primitives run with a user-provided scratchpad, so any number of threads
 * can run the same layer at once.
 */
#include <oneapi/dnnl/dnnl.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"
#include "gemm_int.h"
#include "simd_int.h"

/* One primitive of a layer, for one row count. */
struct prim {
	int n, flags;
	dnnl_primitive_t p;
	size_t scratch;   /* bytes of scratchpad it needs */
	int refs;         /* threads running it now: never evicted while > 0 */
	int temp;         /* not in the cache: destroyed when its user is done */
	uint64_t used;    /* P->clock at its last use */
};

/* Primitives kept per layer. A text batch's row count is batch x longest
 * text, so a server meets hundreds of row counts; each primitive holds
 * about 23 KB (measured on tiny-clip-a), and one per count per layer grew
 * without bound. Past this many, the least recently used one that no
 * thread is running is replaced; making a primitive again costs tens of
 * microseconds (oneDNN keeps its generated code in its own cache). */
#define MAX_PRIMS 32

struct mm_packed {
	clip_precision prec;
	dnnl_memory_desc_t wmd;   /* the blocked weight layout */
	dnnl_memory_t wmem;       /* the converted weights */
	dnnl_memory_t bmem;       /* bias [1][out] float32, or NULL */
	float *wscale;            /* int8: per output channel, [out] */
	pthread_mutex_t mu;       /* guards prims, nprims, clock and each prim's refs, used */
	struct prim *prims[MAX_PRIMS];
	int nprims;
	uint64_t clock;
};

static dnnl_engine_t engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static int engine_ok;

/* oneDNN memory objects (the descriptions of a product's source,
 * destination and scratchpad) for one shape, kept per thread and pointed at
 * each call's buffers: making and freeing three of them per product was a
 * measurable share of a short text. */
struct mems {
	int m, in, out;
	dnnl_data_type_t st;
	size_t scratch;
	dnnl_memory_t src, dst, pad;
};
#define NMEMS 8

/* Per calling thread: a stream and the buffers it reuses. */
struct tls {
	dnnl_stream_t stream;
	struct mems mems[NMEMS]; /* replaced in turn (next) */
	int next;
	void *src;            /* the input rounded to bf16 or int8 */
	size_t src_cap;
	void *scratch;
	size_t scratch_cap;
	void *rs;             /* int8: each input row's scale */
	size_t rs_cap;
	void *acc;            /* int8: the product before the epilogue */
	size_t acc_cap;
};
static pthread_key_t tls_key;

static void mems_free(struct mems *e)
{
	if (e->src)
		dnnl_memory_destroy(e->src);
	if (e->dst)
		dnnl_memory_destroy(e->dst);
	if (e->pad)
		dnnl_memory_destroy(e->pad);
	memset(e, 0, sizeof *e);
}

static void tls_free(void *p)
{
	struct tls *t = p;
	for (int i = 0; i < NMEMS; i++)
		mems_free(&t->mems[i]);
	if (t->stream)
		dnnl_stream_destroy(t->stream);
	free(t->src);
	free(t->scratch);
	free(t->rs);
	free(t->acc);
	free(t);
}

static void engine_init(void)
{
	if (pthread_key_create(&tls_key, tls_free) != 0)
		return;
	engine_ok = dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success;
}

static struct tls *tls_get(void)
{
	struct tls *t = pthread_getspecific(tls_key);
	if (t)
		return t;
	t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	if (dnnl_stream_create(&t->stream, engine, dnnl_stream_default_flags) != dnnl_success ||
	    pthread_setspecific(tls_key, t) != 0) {
		tls_free(t);
		return NULL;
	}
	return t;
}

/* Grows *buf to at least n bytes (64-byte aligned); NULL when out of memory. */
static void *grow(void **buf, size_t *cap, size_t n)
{
	if (n <= *cap)
		return *buf;
	void *p = NULL;
	n = (n + 4095) & ~(size_t)4095;
	if (posix_memalign(&p, 64, n) != 0)
		return NULL;
	free(*buf);
	*buf = p;
	*cap = n;
	return p;
}

int mm_have_dnnl(void)
{
	pthread_once(&engine_once, engine_init);
	return engine_ok;
}

int mm_precision_supported(clip_precision p, const char **why)
{
	if (p == CLIP_PRECISION_AUTO || p == CLIP_PRECISION_F32)
		return 1;
	if (!mm_have_dnnl()) {
		if (why)
			*why = "oneDNN could not start a CPU engine";
		return 0;
	}
	/* The ISA oneDNN dispatches to; each named level includes the ones
	 * below it. */
	dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
	if (p == CLIP_PRECISION_BF16) {
		if ((isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16)
			return 1;
		if (why)
			*why = "this CPU has neither AVX512-BF16 nor AMX";
		return 0;
	}
	if (p == CLIP_PRECISION_INT8) {
		if ((isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni ||
		    (isa & dnnl_cpu_isa_avx2_vnni) == dnnl_cpu_isa_avx2_vnni)
			return 1;
		if (why)
			*why = "this CPU has neither AVX512-VNNI, AVX-VNNI nor AMX";
		return 0;
	}
	if (why)
		*why = "unknown precision";
	return 0;
}


static dnnl_data_type_t src_type(clip_precision p)
{
	return p == CLIP_PRECISION_BF16 ? dnnl_bf16 : p == CLIP_PRECISION_INT8 ? dnnl_s8 : dnnl_f32;
}

/* Makes the primitive for n rows: f32 and bf16 with the bias and the
 * post-ops [activation] [sum]; int8 with the weights' scales only (the
 * rest is int8_epilogue's). */
static dnnl_status_t make_prim(mm_packed *P, const mm_weight *W, int n, int flags,
                               dnnl_primitive_t *out, size_t *scratch)
{
	dnnl_memory_desc_t smd, dmd, bmd;
	dnnl_dims_t ds = {n, W->in}, dd = {n, W->out}, db = {1, W->out};
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	int int8 = P->prec == CLIP_PRECISION_INT8;
	dnnl_status_t s;

	if ((s = dnnl_memory_desc_init_by_tag(&smd, 2, ds, src_type(P->prec), dnnl_ab)) ||
	    (s = dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab)) ||
	    (s = dnnl_memory_desc_init_by_tag(&bmd, 2, db, dnnl_f32, dnnl_ab)))
		return s;
	dnnl_matmul_desc_t md;
	if ((s = dnnl_matmul_desc_init(&md, &smd, &P->wmd, W->b && !int8 ? &bmd : NULL, &dmd)) ||
	    (s = dnnl_primitive_attr_create(&attr)) || (s = dnnl_post_ops_create(&po)))
		goto out;
	if ((s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)))
		goto out;
	if (int8) {
		/* The rest happens in int8_epilogue, after each row's own scale. */
		s = dnnl_primitive_attr_set_output_scales(attr, W->out, 1 << 1, P->wscale);
		if (s == dnnl_success)
			s = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL);
		goto made;
	}
	if ((flags & MM_QUICK_GELU) &&
	    (s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.702f, 0.0f)))
		goto out;
	if ((flags & MM_GELU) &&
	    (s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f)))
		goto out;
	if ((flags & MM_GELU_TANH) &&
	    (s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_tanh, 0.0f, 0.0f)))
		goto out;
	if ((flags & MM_ACCUMULATE) && (s = dnnl_post_ops_append_sum(po, 1.0f)))
		goto out;
	if ((s = dnnl_primitive_attr_set_post_ops(attr, po)) ||
	    (s = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL)))
		goto out;
made:
	if (s != dnnl_success)
		goto out;
	*scratch = dnnl_memory_desc_get_size(
		dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
	s = dnnl_primitive_create(out, pd);
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return s;
}

/* The primitive for n rows with these flags, made on first use, with a
 * reference held for the caller (put_prim gives it back). Entries are
 * allocated one by one, so a pointer stays valid while its reference is
 * held, whatever other threads add or evict meanwhile. */
static struct prim *get_prim(mm_packed *P, const mm_weight *W, int n, int flags)
{
	struct prim *r = NULL;
	pthread_mutex_lock(&P->mu);
	for (int i = 0; i < P->nprims; i++)
		if (P->prims[i]->n == n && P->prims[i]->flags == flags) {
			r = P->prims[i];
			goto found;
		}
	int slot = P->nprims;
	if (slot == MAX_PRIMS) {
		slot = -1;
		for (int i = 0; i < P->nprims; i++)
			if (P->prims[i]->refs == 0 &&
			    (slot < 0 || P->prims[i]->used < P->prims[slot]->used))
				slot = i;
		/* Every one in use (as many threads as entries): this one is
		 * made for this call only. */
	}
	struct prim *np = calloc(1, sizeof *np);
	if (!np)
		goto out;
	np->n = n;
	np->flags = flags;
	if (make_prim(P, W, n, flags, &np->p, &np->scratch) != dnnl_success) {
		free(np);
		goto out;
	}
	if (slot < 0) {
		np->temp = 1;
	} else {
		if (slot < P->nprims) {
			dnnl_primitive_destroy(P->prims[slot]->p);
			free(P->prims[slot]);
		} else {
			P->nprims++;
		}
		P->prims[slot] = np;
	}
	r = np;
found:
	r->refs++;
	r->used = ++P->clock;
out:
	pthread_mutex_unlock(&P->mu);
	return r;
}

static void put_prim(mm_packed *P, struct prim *r)
{
	if (r->temp) {
		dnnl_primitive_destroy(r->p);
		free(r);
		return;
	}
	pthread_mutex_lock(&P->mu);
	r->refs--;
	pthread_mutex_unlock(&P->mu);
}

/* x rounded to bfloat16, to nearest even (the top half of the float's
 * bits, after adding half an ulp of bf16 and the tie bit). */
MULTIVERSION
static void cvt_bf16(const float *x, uint16_t *q, size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		v16u u;
		memcpy(&u, x + i, sizeof u);
		u = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
		v16h h = __builtin_convertvector(u, v16h);
		memcpy(q + i, &h, sizeof h);
	}
	for (; i < n; i++) {
		uint32_t u;
		memcpy(&u, x + i, sizeof u);
		q[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
	}
}

MULTIVERSION
static float absmax(const float *x, size_t n)
{
	v16u m = {0}; /* |x| as bits: ordered like the floats (NaN aside) */
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		v16u u;
		memcpy(&u, x + i, sizeof u);
		u &= 0x7fffffffu;
		v16u gt = (v16u)(u > m);
		m = (u & gt) | (m & ~gt);
	}
	uint32_t r = 0;
	for (int k = 0; k < 16; k++)
		r = m[k] > r ? m[k] : r;
	for (; i < n; i++) {
		uint32_t u;
		memcpy(&u, x + i, sizeof u);
		u &= 0x7fffffffu;
		r = u > r ? u : r;
	}
	float f;
	memcpy(&f, &r, sizeof f);
	return f;
}

/* x * inv rounded to nearest even (adding and taking away 1.5 * 2^23 leaves
 * the rounded value for |v| < 2^22), then narrowed; |x * inv| <= 127. */
MULTIVERSION
static void cvt_int8(const float *x, int8_t *q, size_t n, float inv)
{
	const float magic = 12582912.0f;
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		v16 t = LOAD16(x + i) * inv;
		t = (t + magic) - magic;
		v16b b = __builtin_convertvector(__builtin_convertvector(t, v16i), v16b);
		memcpy(q + i, &b, sizeof b);
	}
	for (; i < n; i++) {
		float t = (x[i] * inv + magic) - magic;
		q[i] = (int8_t)t;
	}
}

/* int8: each input row gets its own scale (max |x| / 127): one row with
 * large values (the class token, the end-of-text token) no longer costs
 * every other row its resolution. oneDNN 2.6 cannot take a scale per row
 * at speed (measured: the reference kernel), so the product comes out
 * unscaled along rows and int8_epilogue applies the row scale, the bias,
 * the activation and the residual add in one pass. */
static void quantize_input(const float *x, int rows, int in, int8_t *q, float *rs)
{
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * in;
		float m = absmax(xr, (size_t)in);
		float sc = m > 0 && isfinite(m) ? m / 127.0f : 1.0f;
		rs[r] = sc;
		cvt_int8(xr, q + (size_t)r * in, (size_t)in, 1.0f / sc);
	}
}

MULTIVERSION
static void int8_epilogue(const float *a, float sc, const float *b, float *y, int out, int flags)
{
	int o = 0;
	int add = (flags & MM_ACCUMULATE) != 0, qg = (flags & MM_QUICK_GELU) != 0;
	if (flags & (MM_GELU | MM_GELU_TANH)) { /* no vector erf or tanh: one value at a time */
		for (; o < out; o++) {
			float v = a[o] * sc + (b ? b[o] : 0.0f);
			v = flags & MM_GELU ? 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2))
			                    : mm_gelu_tanh(v);
			y[o] = add ? y[o] + v : v;
		}
		return;
	}
	for (; o + 16 <= out; o += 16) {
		v16 v = LOAD16(a + o) * sc;
		if (b)
			v += LOAD16(b + o);
		if (qg) {
			v16 e = v * -1.702f;
			vexp(&e);
			v = v / (e + 1.0f);
		}
		if (add)
			v += LOAD16(y + o);
		memcpy(y + o, &v, sizeof v);
	}
	for (; o < out; o++) {
		float v = a[o] * sc + (b ? b[o] : 0.0f);
		if (qg)
			v = v / (1.0f + expf(-1.702f * v));
		y[o] = add ? y[o] + v : v;
	}
}

/* This thread's memory objects for an m-row product of W with source type
 * st and a scratchpad of `scratch` bytes; NULL when oneDNN fails. */
static struct mems *mems_for(struct tls *t, int m, const mm_weight *W, dnnl_data_type_t st,
                             size_t scratch)
{
	for (int i = 0; i < NMEMS; i++) {
		struct mems *e = &t->mems[i];
		if (e->src && e->m == m && e->in == W->in && e->out == W->out && e->st == st &&
		    e->scratch == scratch)
			return e;
	}
	struct mems *e = &t->mems[t->next];
	t->next = (t->next + 1) % NMEMS;
	mems_free(e);
	dnnl_memory_desc_t smd, dmd, spmd;
	dnnl_dims_t ds = {m, W->in}, dd = {m, W->out}, dsp = {(dnnl_dim_t)scratch};
	if (dnnl_memory_desc_init_by_tag(&smd, 2, ds, st, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&spmd, 1, dsp, dnnl_u8, dnnl_a) ||
	    dnnl_memory_create(&e->src, &smd, engine, DNNL_MEMORY_NONE) ||
	    dnnl_memory_create(&e->dst, &dmd, engine, DNNL_MEMORY_NONE) ||
	    dnnl_memory_create(&e->pad, &spmd, engine, DNNL_MEMORY_NONE)) {
		mems_free(e);
		return NULL;
	}
	*e = (struct mems){m, W->in, W->out, st, scratch, e->src, e->dst, e->pad};
	return e;
}

/* A product split by rows between two threads. */
struct rows_job {
	mm_packed *P;
	const mm_weight *W;
	const float *x;
	float *y;
	int n, flags;
	int ok[2], ran[2]; /* per thread; ran: the product ran (y may have changed) */
	int nchunks, next; /* rows handed out chunk by chunk (next: atomic) */
};

/* Rows r0..r1 of a product on the calling thread: convert them, run one
 * single-threaded oneDNN call, and for int8 the epilogue. */
static void run_rows(struct rows_job *j, int h, int r0, int r1)
{
	mm_packed *P = j->P;
	const mm_weight *W = j->W;
	int m = r1 - r0, int8 = P->prec == CLIP_PRECISION_INT8;
	size_t nx = (size_t)m * W->in;
	size_t esz = P->prec == CLIP_PRECISION_BF16 ? 2 : int8 ? 1 : 4;
	const float *x = j->x + (size_t)r0 * W->in;
	float *y = j->y + (size_t)r0 * W->out;
	struct tls *t = tls_get();
	struct prim *pr = NULL;
	j->ok[h] = 0;
	if (m == 0) {
		j->ok[h] = 1;
		return;
	}
	/* One thread for oneDNN, before the primitive is made: it plans its
	 * work for the thread count it sees then, and runs that many. */
	if (omp_get_max_threads() != 1)
		omp_set_num_threads(1);
	if (!t || (esz != 4 && !grow(&t->src, &t->src_cap, nx * esz)) ||
	    (int8 && (!grow(&t->rs, &t->rs_cap, (size_t)m * sizeof(float)) ||
	              !grow(&t->acc, &t->acc_cap, (size_t)m * W->out * sizeof(float)))) ||
	    !(pr = get_prim(P, W, m, j->flags)) ||
	    !grow(&t->scratch, &t->scratch_cap, pr->scratch ? pr->scratch : 1))
		goto done;
	const void *src = x;
	float *dst = int8 ? t->acc : y;
	if (P->prec == CLIP_PRECISION_BF16) {
		cvt_bf16(x, t->src, nx);
		src = t->src;
	} else if (int8) {
		quantize_input(x, m, W->in, t->src, t->rs);
		src = t->src;
	}
	struct mems *e = mems_for(t, m, W, src_type(P->prec), pr->scratch ? pr->scratch : 1);
	dnnl_exec_arg_t args[5];
	int na = 0;
	if (!e || dnnl_memory_set_data_handle(e->src, (void *)src) ||
	    dnnl_memory_set_data_handle(e->dst, dst) ||
	    dnnl_memory_set_data_handle(e->pad, t->scratch))
		goto done;
	args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, e->src};
	args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, P->wmem};
	args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, e->dst};
	args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->pad};
	if (P->bmem && !int8)
		args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, P->bmem};
	j->ran[h] = 1;
	if (dnnl_primitive_execute(pr->p, t->stream, na, args) != dnnl_success ||
	    dnnl_stream_wait(t->stream) != dnnl_success)
		goto done;
	const float *acc = t->acc, *rs = t->rs;
	for (int r = 0; int8 && r < m; r++)
		int8_epilogue(acc + (size_t)r * W->out, rs[r], W->b, y + (size_t)r * W->out, W->out,
		              j->flags);
	j->ok[h] = 1;
done:
	if (pr)
		put_prim(P, pr);
}

/* The rows are handed out in chunks to whichever of the two threads asks
 * next, not in fixed halves: when a third thread (the ingest decoder, a
 * request) takes time from one of them, the other takes more rows instead
 * of waiting at the end. int8 chunks are at most INT8_ROWS: the unscaled
 * product then stays in L2 for the epilogue (64 rows of a 3072-wide layer:
 * 768 KB); in one piece batch 32 ran slower than batch 8 (measured: 50.7
 * against 61.0 images/s). */
#define INT8_ROWS 64
#define CHUNKS 8

static void rows_part(void *ctx, int h0, int h1)
{
	struct rows_job *j = ctx;
	for (int h = h0; h < h1; h++)
		for (;;) {
			int c = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
			if (c >= j->nchunks)
				break;
			int r0 = (int)((long)j->n * c / j->nchunks);
			int r1 = (int)((long)j->n * (c + 1) / j->nchunks);
			run_rows(j, h, r0, r1);
			if (!j->ok[h])
				return;
		}
}

void mm_dnnl_linear(int n, const mm_weight *W, const float *x, float *y, int flags)
{
	struct rows_job j = {W->packed, W, x, y, n, flags, {1, 1}, {0, 0}, 0, 0};
	size_t flops = (size_t)n * W->in * (size_t)W->out;
	/* Equal chunks (one or two row counts to make primitives for): up to
	 * CHUNKS of them, none under 32 rows unless that leaves fewer than
	 * two, and int8 ones no larger than INT8_ROWS. */
	int nc = n / 32 < CHUNKS ? n / 32 : CHUNKS;
	if (nc < 2)
		nc = n < 2 ? 1 : 2;
	if (j.P->prec == CLIP_PRECISION_INT8 && (n + nc - 1) / nc > INT8_ROWS)
		nc = (n + INT8_ROWS - 1) / INT8_ROWS;
	j.nchunks = nc;
	if (nc >= 2)
		mm_parallel(2, flops < (1u << 30) ? (int)flops : 1 << 30, rows_part, &j);
	else
		rows_part(&j, 0, 1);
	if (j.ok[0] && j.ok[1])
		return;
	/* Out of memory, or oneDNN refused this row count: the product still
	 * has to happen, on OpenBLAS from the float32 weights, unless a half
	 * already added into y. Without that way (a layer whose float32 copy
	 * was freed after packing) the output becomes NaN, which the encoder
	 * turns into an error rather than a wrong embedding. */
	if (W->w && !((flags & MM_ACCUMULATE) && (j.ran[0] || j.ran[1]))) {
		mm_weight f = *W;
		f.packed = NULL;
		mm_linear(n, &f, x, y, flags);
	} else {
		for (size_t i = 0; i < (size_t)n * W->out; i++)
			y[i] = NAN;
	}
}

/* Quantizes w[out][in] to int8, one scale per output row. */
static void quantize_rows(const float *w, int out, int in, int8_t *q, float *scale)
{
	for (int o = 0; o < out; o++) {
		const float *r = w + (size_t)o * in;
		float m = 0;
		for (int i = 0; i < in; i++)
			m = fabsf(r[i]) > m ? fabsf(r[i]) : m;
		float s = m > 0 ? m / 127.0f : 1.0f, inv = 1.0f / s;
		scale[o] = s;
		for (int i = 0; i < in; i++)
			q[(size_t)o * in + i] = (int8_t)lrintf(r[i] * inv);
	}
}

/* Converts the weights (w[out][in] is the matrix [in][out] in column-major
 * order: oneDNN's "ba") into the blocked layout with one reorder, and the
 * bias into a oneDNN tensor. data is w, or its int8 copy. */
static dnnl_status_t convert(mm_packed *P, const mm_weight *W, const void *data)
{
	dnnl_memory_desc_t from;
	dnnl_dims_t dw = {W->in, W->out};
	dnnl_data_type_t ft = P->prec == CLIP_PRECISION_INT8 ? dnnl_s8 : dnnl_f32;
	dnnl_memory_t mfrom = NULL;
	dnnl_primitive_desc_t rpd = NULL;
	dnnl_primitive_t r = NULL;
	dnnl_stream_t st = NULL;
	dnnl_status_t s;

	if ((s = dnnl_memory_desc_init_by_tag(&from, 2, dw, ft, dnnl_ba)) ||
	    (s = dnnl_memory_create(&mfrom, &from, engine, (void *)data)) ||
	    (s = dnnl_memory_create(&P->wmem, &P->wmd, engine, DNNL_MEMORY_ALLOCATE)) ||
	    (s = dnnl_reorder_primitive_desc_create(&rpd, &from, engine, &P->wmd, engine, NULL)) ||
	    (s = dnnl_primitive_create(&r, rpd)) ||
	    (s = dnnl_stream_create(&st, engine, dnnl_stream_default_flags)))
		goto out;
	dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, mfrom}, {DNNL_ARG_TO, P->wmem}};
	if ((s = dnnl_primitive_execute(r, st, 2, args)) == dnnl_success)
		s = dnnl_stream_wait(st);
	if (s == dnnl_success && W->b) {
		dnnl_memory_desc_t bmd;
		dnnl_dims_t db = {1, W->out};
		void *h = NULL;
		if ((s = dnnl_memory_desc_init_by_tag(&bmd, 2, db, dnnl_f32, dnnl_ab)) ||
		    (s = dnnl_memory_create(&P->bmem, &bmd, engine, DNNL_MEMORY_ALLOCATE)) ||
		    (s = dnnl_memory_get_data_handle(P->bmem, &h)))
			goto out;
		memcpy(h, W->b, (size_t)W->out * sizeof(float));
	}
out:
	if (st)
		dnnl_stream_destroy(st);
	if (r)
		dnnl_primitive_destroy(r);
	if (rpd)
		dnnl_primitive_desc_destroy(rpd);
	if (mfrom)
		dnnl_memory_destroy(mfrom);
	return s;
}

/* The weight layout oneDNN picks for this layer: asked with format "any"
 * for a mid-sized product (the blocked layout depends on the CPU, the
 * types and the layer's shape, not on the row count). */
static dnnl_status_t pick_layout(mm_packed *P, const mm_weight *W)
{
	dnnl_memory_desc_t smd, wmd, dmd;
	dnnl_dims_t ds = {64, W->in}, dw = {W->in, W->out}, dd = {64, W->out};
	dnnl_data_type_t st = src_type(P->prec), wt = st;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_status_t s;
	if ((s = dnnl_memory_desc_init_by_tag(&smd, 2, ds, st, dnnl_ab)) ||
	    (s = dnnl_memory_desc_init_by_tag(&wmd, 2, dw, wt, dnnl_format_tag_any)) ||
	    (s = dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab)))
		return s;
	dnnl_matmul_desc_t md;
	if ((s = dnnl_matmul_desc_init(&md, &smd, &wmd, NULL, &dmd)) ||
	    (s = dnnl_primitive_attr_create(&attr)))
		return s;
	if (P->prec == CLIP_PRECISION_INT8)
		s = dnnl_primitive_attr_set_output_scales(attr, W->out, 1 << 1, P->wscale);
	if (s == dnnl_success && (s = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL)) ==
	                                 dnnl_success)
		P->wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	dnnl_primitive_attr_destroy(attr);
	return s;
}

int mm_pack(mm_weight *W, clip_precision p, clip_err *err)
{
	const char *why = NULL;
	if (!mm_have_dnnl())
		return clip_fail(err, CLIP_EINVAL, "oneDNN could not start a CPU engine");
	if (p == CLIP_PRECISION_AUTO || !mm_precision_supported(p, &why))
		return clip_fail(err, CLIP_EINVAL, "cannot run %s: %s", clip_precision_name(p),
		                 why ? why : "no precision given");
	if (!W->w)
		return clip_fail(err, CLIP_EINVAL, "a layer has no float32 weights to convert");
	mm_packed *P = calloc(1, sizeof *P);
	if (!P)
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	P->prec = p;
	pthread_mutex_init(&P->mu, NULL);
	dnnl_status_t s = dnnl_success;
	int8_t *q = NULL;
	if (p == CLIP_PRECISION_INT8) {
		q = malloc((size_t)W->in * W->out);
		P->wscale = malloc((size_t)W->out * sizeof *P->wscale);
		if (!q || !P->wscale)
			s = dnnl_out_of_memory;
		else
			quantize_rows(W->w, W->out, W->in, q, P->wscale);
	}
	if (s == dnnl_success && (s = pick_layout(P, W)) == dnnl_success)
		s = convert(P, W, q ? (const void *)q : (const void *)W->w);
	free(q);
	W->packed = P;
	if (s == dnnl_success)
		mm_spin_between_jobs();
	if (s != dnnl_success) {
		mm_unpack(W);
		return clip_fail(err, s == dnnl_out_of_memory ? CLIP_ENOMEM : CLIP_EINVAL,
		                 "oneDNN cannot convert a %dx%d layer to %s (status %d)", W->out, W->in,
		                 clip_precision_name(p), (int)s);
	}
	return CLIP_OK;
}

void mm_unpack(mm_weight *W)
{
	mm_packed *P = W->packed;
	if (!P)
		return;
	for (int i = 0; i < P->nprims; i++) {
		dnnl_primitive_destroy(P->prims[i]->p);
		free(P->prims[i]);
	}
	if (P->wmem)
		dnnl_memory_destroy(P->wmem);
	if (P->bmem)
		dnnl_memory_destroy(P->bmem);
	free(P->wscale);
	pthread_mutex_destroy(&P->mu);
	free(P);
	W->packed = NULL;
}
