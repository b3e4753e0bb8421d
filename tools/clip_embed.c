/*
 * clip-embed: embeddings, token ids, preprocessed pixels and zero-shot labels
 * from the command line, one JSON object per input per line.
 *
 *   clip-embed --model DIR [--raw] [--threads N] [--batch N] [--precision P]
 *              [--text STR] [--image FILE] [--pixels FILE.f32] [--tokenize STR]
 *              [--preprocess FILE --out OUT.f32]
 *              [--classify IMAGE --labels "a,b,c"] ...
 *   clip-embed --model DIR --list FILE --shard I/N --out DIR [--max-bytes N]
 *              [--batch N] [--threads N] [--precision P]
 *
 * Inputs are processed in the order given; consecutive texts and images are
 * encoded in batches of up to --batch. Errors go to stderr and the exit
 * status is non-zero when any input failed. The second form embeds shard I
 * of N of a list of image paths into a directory for POST /v1/import
 * (embed_shard.c, docs/SHARDS.md).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "embed_shard.h"
#include "gemm_int.h"

enum op { OP_TEXT, OP_IMAGE, OP_PIXELS, OP_TOKENIZE, OP_PREPROCESS, OP_CLASSIFY };

struct input {
	enum op op;
	const char *arg;
	const char *out;     /* --preprocess */
	const char *labels;  /* --classify */
};

static void usage(FILE *f)
{
	fputs("usage: clip-embed --model DIR [options] inputs...\n"
	      "inputs (repeatable, processed in order):\n"
	      "  --text STR             embed a text\n"
	      "  --image FILE           embed an image file\n"
	      "  --pixels FILE.f32      embed a preprocessed 3xSxS float32 CHW tensor\n"
	      "  --tokenize STR         print the token ids of a text\n"
	      "  --preprocess FILE --out OUT.f32\n"
	      "                         write the preprocessed tensor of an image\n"
	      "  --classify IMAGE --labels \"a,b,c\"\n"
	      "                         zero-shot probabilities, template \"a photo of a {}.\"\n"
	      "options:\n"
	      "  --raw                  unnormalised projection output (default: L2-normalised)\n"
	      "  --threads N            threads per product (default: the libraries' own choice)\n"
	      "  --precision P          auto, f32, bf16 or int8 (default auto: bf16 where the CPU\n"
	      "                         has AVX512-BF16 or AMX, else f32)\n"
	      "  --batch N              largest batch (default 16)\n"
	      "shards (docs/SHARDS.md), instead of inputs:\n"
	      "  --list FILE --shard I/N --out DIR\n"
	      "                         embed every N-th image path of FILE, from the I-th\n"
	      "                         (counting from 0), into DIR/shard-IIIII-of-NNNNN\n"
	      "  --max-bytes N          larger image files are failed items (default 64 MiB)\n",
	      f);
}

static void print_vec(json_t *o, const char *key, const float *v, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_real(v[i]));
	json_object_set_new(o, key, a);
}

static void emit(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
	if (s) {
		puts(s);
		free(s);
	}
	json_decref(o);
}

static int read_pixels(const char *path, float *out, size_t n)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "clip-embed: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t got = fread(out, sizeof(float), n, f);
	int extra = fgetc(f) != EOF;
	fclose(f);
	if (got != n || extra) {
		fprintf(stderr, "clip-embed: %s: expected %zu float32 values (3xSxS)\n", path, n);
		return -1;
	}
	return 0;
}

struct runner {
	clip_model *m;
	clip_ctx *ctx;
	int batch, raw, dim, S, C;
	float *pix;    /* [batch][3][S][S] */
	int32_t *ids;  /* [batch][C] */
	float *emb;    /* [batch][dim] */
	int failed;
};

/* Encodes inputs in[0..n) that are all texts or all images/pixels. */
static void run_batch(struct runner *r, const struct input *in, int n)
{
	clip_err err;
	int k = 0;
	const struct input *ok[256];
	size_t plane = (size_t)3 * r->S * r->S;
	for (int i = 0; i < n; i++) {
		int rc = 0;
		if (in[i].op == OP_TEXT)
			rc = clip_tokenize(r->m, in[i].arg, r->ids + (size_t)k * r->C, NULL, &err);
		else if (in[i].op == OP_IMAGE)
			rc = clip_preprocess_file(r->m, in[i].arg, NULL, r->pix + k * plane, NULL, NULL, &err);
		else if (read_pixels(in[i].arg, r->pix + k * plane, plane) != 0) {
			r->failed = 1;
			continue;
		}
		if (rc != CLIP_OK) {
			fprintf(stderr, "clip-embed: %s: %s\n", in[i].arg, err.msg);
			r->failed = 1;
			continue;
		}
		ok[k++] = &in[i];
	}
	if (k == 0)
		return;
	int rc = in[0].op == OP_TEXT ? clip_encode_texts(r->ctx, k, r->ids, r->emb, &err)
	                             : clip_encode_images(r->ctx, k, r->pix, r->emb, &err);
	if (rc != CLIP_OK) {
		fprintf(stderr, "clip-embed: %s\n", err.msg);
		r->failed = 1;
		return;
	}
	for (int i = 0; i < k; i++) {
		float *v = r->emb + (size_t)i * r->dim;
		if (!r->raw)
			clip_normalize(v, r->dim);
		json_t *o = json_object();
		const char *key = ok[i]->op == OP_TEXT ? "text" : ok[i]->op == OP_IMAGE ? "image" : "pixels";
		json_object_set_new(o, key, json_string(ok[i]->arg));
		print_vec(o, "embedding", v, r->dim);
		emit(o);
	}
}

static void run_tokenize(struct runner *r, const struct input *in)
{
	clip_err err;
	if (clip_tokenize(r->m, in->arg, r->ids, NULL, &err) != CLIP_OK) {
		fprintf(stderr, "clip-embed: tokenize: %s\n", err.msg);
		r->failed = 1;
		return;
	}
	json_t *o = json_object(), *a = json_array();
	json_object_set_new(o, "text", json_string(in->arg));
	for (int i = 0; i < r->C; i++)
		json_array_append_new(a, json_integer(r->ids[i]));
	json_object_set_new(o, "ids", a);
	emit(o);
}

static void run_preprocess(struct runner *r, const struct input *in)
{
	clip_err err;
	size_t plane = (size_t)3 * r->S * r->S;
	if (clip_preprocess_file(r->m, in->arg, NULL, r->pix, NULL, NULL, &err) != CLIP_OK) {
		fprintf(stderr, "clip-embed: %s: %s\n", in->arg, err.msg);
		r->failed = 1;
		return;
	}
	FILE *f = fopen(in->out, "wb");
	if (!f || fwrite(r->pix, sizeof(float), plane, f) != plane || fclose(f) != 0) {
		fprintf(stderr, "clip-embed: %s: %s\n", in->out, strerror(errno));
		r->failed = 1;
		return;
	}
	json_t *o = json_object();
	json_object_set_new(o, "image", json_string(in->arg));
	json_object_set_new(o, "out", json_string(in->out));
	emit(o);
}

static void run_classify(struct runner *r, const struct input *in)
{
	clip_err err;
	char *labels = strdup(in->labels);
	char *names[256];
	int n = 0;
	float img[4096];
	if (!labels || r->dim > 4096) {
		r->failed = 1;
		free(labels);
		return;
	}
	for (char *save = NULL, *t = strtok_r(labels, ",", &save); t && n < 256;
	     t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		char *e = t + strlen(t);
		while (e > t && e[-1] == ' ')
			*--e = 0;
		if (*t)
			names[n++] = t;
	}
	if (n == 0) {
		fprintf(stderr, "clip-embed: --labels needs at least one label\n");
		goto fail;
	}
	if (clip_preprocess_file(r->m, in->arg, NULL, r->pix, NULL, NULL, &err) != CLIP_OK ||
	    clip_encode_images(r->ctx, 1, r->pix, img, &err) != CLIP_OK) {
		fprintf(stderr, "clip-embed: %s: %s\n", in->arg, err.msg);
		goto fail;
	}
	clip_normalize(img, r->dim);
	double logits[256], mx = -INFINITY, sum = 0;
	for (int i0 = 0; i0 < n; i0 += r->batch) {
		int k = n - i0 < r->batch ? n - i0 : r->batch;
		for (int i = 0; i < k; i++) {
			char prompt[1024];
			snprintf(prompt, sizeof prompt, "a photo of a %s.", names[i0 + i]);
			if (clip_tokenize(r->m, prompt, r->ids + (size_t)i * r->C, NULL, &err) != CLIP_OK) {
				fprintf(stderr, "clip-embed: label %s: %s\n", names[i0 + i], err.msg);
				goto fail;
			}
		}
		if (clip_encode_texts(r->ctx, k, r->ids, r->emb, &err) != CLIP_OK) {
			fprintf(stderr, "clip-embed: %s\n", err.msg);
			goto fail;
		}
		for (int i = 0; i < k; i++) {
			float *t = r->emb + (size_t)i * r->dim;
			clip_normalize(t, r->dim);
			double c = 0;
			for (int j = 0; j < r->dim; j++)
				c += (double)t[j] * img[j];
			logits[i0 + i] = clip_model_logit_scale(r->m) * c;
			if (logits[i0 + i] > mx)
				mx = logits[i0 + i];
		}
	}
	for (int i = 0; i < n; i++)
		sum += exp(logits[i] - mx);
	json_t *o = json_object(), *a = json_array();
	json_object_set_new(o, "image", json_string(in->arg));
	for (int i = 0; i < n; i++) {
		json_t *l = json_object();
		json_object_set_new(l, "label", json_string(names[i]));
		json_object_set_new(l, "prob", json_real(exp(logits[i] - mx) / sum));
		json_array_append_new(a, l);
	}
	json_object_set_new(o, "labels", a);
	emit(o);
	free(labels);
	return;
fail:
	r->failed = 1;
	free(labels);
}

int main(int argc, char **argv)
{
	const char *model = NULL;
	struct runner r = {.batch = 16};
	int threads = 0, nin = 0;
	struct shard_args sh = {.max_bytes = 64 << 20, .shard = -1};
	const char *shard_out = NULL;
	clip_options opts = {CLIP_PRECISION_AUTO};
	struct input *in = calloc((size_t)argc, sizeof *in);
	if (!in)
		return 1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_ARG                                                                   \
	do {                                                                       \
		if (!v) {                                                          \
			fprintf(stderr, "clip-embed: %s needs a value\n", a);      \
			return 2;                                                  \
		}                                                                  \
		i++;                                                               \
	} while (0)
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--model")) {
			NEED_ARG;
			model = v;
		} else if (!strcmp(a, "--raw")) {
			r.raw = 1;
		} else if (!strcmp(a, "--threads")) {
			NEED_ARG;
			threads = atoi(v);
		} else if (!strcmp(a, "--precision")) {
			NEED_ARG;
			if (clip_precision_parse(v, &opts.precision) != 0) {
				fprintf(stderr, "clip-embed: --precision must be auto, f32, bf16 or int8\n");
				return 2;
			}
		} else if (!strcmp(a, "--batch")) {
			NEED_ARG;
			r.batch = atoi(v);
			if (r.batch < 1 || r.batch > 256) {
				fprintf(stderr, "clip-embed: --batch must be 1..256\n");
				return 2;
			}
		} else if (!strcmp(a, "--text") || !strcmp(a, "--image") || !strcmp(a, "--pixels") ||
		           !strcmp(a, "--tokenize") || !strcmp(a, "--preprocess") ||
		           !strcmp(a, "--classify")) {
			NEED_ARG;
			struct input *x = &in[nin++];
			x->arg = v;
			x->op = !strcmp(a, "--text") ? OP_TEXT : !strcmp(a, "--image") ? OP_IMAGE
			      : !strcmp(a, "--pixels") ? OP_PIXELS : !strcmp(a, "--tokenize") ? OP_TOKENIZE
			      : !strcmp(a, "--preprocess") ? OP_PREPROCESS : OP_CLASSIFY;
		} else if (!strcmp(a, "--list")) {
			NEED_ARG;
			sh.list = v;
		} else if (!strcmp(a, "--shard")) {
			NEED_ARG;
			if (embed_shard_parse(v, &sh.shard, &sh.nshards) != 0) {
				fprintf(stderr, "clip-embed: --shard must be I/N with 0 <= I < N <= 99999\n");
				return 2;
			}
		} else if (!strcmp(a, "--max-bytes")) {
			NEED_ARG;
			sh.max_bytes = atoll(v);
			if (sh.max_bytes < 1 || sh.max_bytes > ((int64_t)1 << 31)) {
				fprintf(stderr, "clip-embed: --max-bytes must be 1..2147483648\n");
				return 2;
			}
		} else if (!strcmp(a, "--out") && nin == 0) {
			NEED_ARG;
			shard_out = v;
		} else if (!strcmp(a, "--out") || !strcmp(a, "--labels")) {
			NEED_ARG;
			enum op want = !strcmp(a, "--out") ? OP_PREPROCESS : OP_CLASSIFY;
			if (nin == 0 || in[nin - 1].op != want) {
				fprintf(stderr, "clip-embed: %s must follow %s\n", a,
				        want == OP_PREPROCESS ? "--preprocess" : "--classify");
				return 2;
			}
			if (want == OP_PREPROCESS)
				in[nin - 1].out = v;
			else
				in[nin - 1].labels = v;
		} else {
			fprintf(stderr, "clip-embed: unknown option %s\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (!model) {
		fprintf(stderr, "clip-embed: --model DIR is required\n");
		usage(stderr);
		return 2;
	}
	if (sh.list || sh.shard >= 0 || shard_out) {
		if (!sh.list || sh.shard < 0 || !shard_out || nin > 0) {
			fprintf(stderr, "clip-embed: --list, --shard and --out go together, without inputs\n");
			return 2;
		}
		if (threads > 0)
			mm_set_threads(threads);
		sh.model = model;
		sh.out = shard_out;
		sh.opts = opts;
		sh.batch = r.batch;
		free(in);
		return embed_shard_run(&sh);
	}
	for (int i = 0; i < nin; i++)
		if ((in[i].op == OP_PREPROCESS && !in[i].out) || (in[i].op == OP_CLASSIFY && !in[i].labels)) {
			fprintf(stderr, "clip-embed: %s needs %s\n", in[i].arg,
			        in[i].op == OP_PREPROCESS ? "--out OUT.f32" : "--labels \"a,b,c\"");
			return 2;
		}
	if (threads > 0)
		mm_set_threads(threads);

	clip_err err;
	if (clip_model_open_opts(model, &opts, &r.m, &err) != CLIP_OK) {
		fprintf(stderr, "clip-embed: %s: %s\n", model, err.msg);
		return 1;
	}
	if (clip_ctx_new(r.m, r.batch, &r.ctx, &err) != CLIP_OK) {
		fprintf(stderr, "clip-embed: %s\n", err.msg);
		clip_model_close(r.m);
		return 1;
	}
	r.dim = clip_model_dim(r.m);
	r.S = clip_model_image_size(r.m);
	r.C = clip_model_context(r.m);
	r.pix = malloc((size_t)r.batch * 3 * r.S * r.S * sizeof *r.pix);
	r.ids = malloc((size_t)r.batch * r.C * sizeof *r.ids);
	r.emb = malloc((size_t)r.batch * r.dim * sizeof *r.emb);
	if (!r.pix || !r.ids || !r.emb) {
		fprintf(stderr, "clip-embed: out of memory\n");
		return 1;
	}
	for (int i = 0; i < nin;) {
		if (in[i].op == OP_TEXT || in[i].op == OP_IMAGE || in[i].op == OP_PIXELS) {
			int text = in[i].op == OP_TEXT, j = i;
			while (j < nin && j - i < r.batch && (in[j].op == OP_TEXT) == text &&
			       (in[j].op == OP_TEXT || in[j].op == OP_IMAGE || in[j].op == OP_PIXELS))
				j++;
			run_batch(&r, in + i, j - i);
			i = j;
			continue;
		}
		if (in[i].op == OP_TOKENIZE)
			run_tokenize(&r, &in[i]);
		else if (in[i].op == OP_PREPROCESS)
			run_preprocess(&r, &in[i]);
		else
			run_classify(&r, &in[i]);
		i++;
	}
	free(r.pix);
	free(r.ids);
	free(r.emb);
	free(in);
	clip_ctx_free(r.ctx);
	clip_model_close(r.m);
	return r.failed ? 1 : 0;
}
