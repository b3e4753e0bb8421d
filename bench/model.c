/*
 * bench/model: CLIP encoder speed on a checkpoint (for the comparison with
 * ONNX Runtime, a `clip-mkmodel --preset vit-b-32` one: speed does not depend
 * on the weights' values).
 *
 *   build/bench/model --model DIR [--threads 2] [--seconds 10] [--batches 1,8,32]
 *                     [--precision auto|f32|bf16|int8|openblas]
 *
 * openblas is the float32 reference path (no oneDNN); f32 is oneDNN's.
 *
 * Prints one line per case, as text and (with --json) as JSON in the shape
 * ../shared/peers/run.sh prints: images/s at each batch size, latency of a
 * 7-token and a 77-token text, and the process's peak RSS with the model
 * loaded. Medians over repeated runs after one warm-up run.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clip.h"
#include "gemm_int.h"
#include "timing.h"

/* FLOPs per item come from clip_model_image_gflop / _text_gflop, counted
 * as ../shared/peers/flops.py counts them (for ViT-B/32: 8.818 GFLOP per
 * 224x224 image, 5.960 GFLOP per 77-token text). */

static long peak_rss_mb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb < 0 ? -1 : kb / 1024;
}

/* --streams: one encoder thread of several running at once. */
struct stream {
	const clip_model *m;
	int batch, images;
	double seconds, rate; /* rate: images/s after its warm-up */
	const float *pix;
	pthread_t th;
};

static void *stream_main(void *arg)
{
	struct stream *s = arg;
	clip_ctx *c;
	float *out = malloc((size_t)s->batch * clip_model_dim(s->m) * sizeof *out);
	if (!out || clip_ctx_new(s->m, s->batch, &c, NULL) != CLIP_OK) {
		free(out);
		return NULL;
	}
	clip_encode_images(c, s->batch, s->pix, out, NULL); /* warm-up */
	double start = bench_now();
	while (bench_now() - start < s->seconds) {
		clip_encode_images(c, s->batch, s->pix, out, NULL);
		s->images += s->batch;
	}
	s->rate = s->images / (bench_now() - start);
	clip_ctx_free(c);
	free(out);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *model = NULL, *batches = "1,8,32", *prec = "auto";
	int threads = 2, json = 0, streams = 1;
	double seconds = 10;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--json")) {
			json = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "usage: %s --model DIR [--threads N] [--seconds S] [--batches 1,8,32] [--precision auto|f32|bf16|int8|openblas] [--streams N] [--json]\n", argv[0]);
			return 2;
		}
		i++;
		if (!strcmp(a, "--model"))
			model = v;
		else if (!strcmp(a, "--threads"))
			threads = atoi(v);
		else if (!strcmp(a, "--seconds"))
			seconds = atof(v);
		else if (!strcmp(a, "--batches"))
			batches = v;
		else if (!strcmp(a, "--precision"))
			prec = v;
		else if (!strcmp(a, "--streams"))
			streams = atoi(v);
		else {
			fprintf(stderr, "bench/model: unknown option %s\n", a);
			return 2;
		}
	}
	if (!model) {
		fprintf(stderr, "bench/model: --model DIR is required (make one with clip-mkmodel --preset vit-b-32)\n");
		return 2;
	}
	mm_set_threads(threads);
	clip_model *m;
	clip_err err;
	double t0 = bench_now();
	/* openblas: the float32 reference path (clip_model_open). */
	clip_options opts = {CLIP_PRECISION_AUTO};
	int reference = !strcmp(prec, "openblas");
	if (!reference && clip_precision_parse(prec, &opts.precision) != 0) {
		fprintf(stderr, "bench/model: --precision must be auto, f32, bf16, int8 or openblas\n");
		return 2;
	}
	if ((reference ? clip_model_open(model, &m, &err)
	               : clip_model_open_opts(model, &opts, &m, &err)) != CLIP_OK) {
		fprintf(stderr, "bench/model: %s\n", err.msg);
		return 1;
	}
	double t_open = bench_now() - t0;
	int maxb = 1;
	for (const char *p = batches; *p;) {
		int b = atoi(p);
		maxb = b > maxb ? b : maxb;
		p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p);
	}
	clip_ctx *c;
	if (clip_ctx_new(m, maxb, &c, &err) != CLIP_OK) {
		fprintf(stderr, "bench/model: %s\n", err.msg);
		return 1;
	}
	int S = clip_model_image_size(m), D = clip_model_dim(m), C = clip_model_context(m);
	size_t plane = (size_t)3 * S * S;
	float *pix = malloc((size_t)maxb * plane * sizeof *pix), *out = malloc((size_t)maxb * D * sizeof *out);
	for (size_t i = 0; i < (size_t)maxb * plane; i++)
		pix[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
	const char *pname = reference ? "openblas" : clip_precision_name(clip_model_precision(m));
	double img_gflop = clip_model_image_gflop(m);
	printf("# model %s (%s, %dx%d, dim %d, context %d), %d threads, precision %s, open %.0f ms, "
	       "%.3f GFLOP per image\n", model, clip_family_name(clip_model_family(m)), S, S, D, C,
	       threads, pname, t_open * 1e3, img_gflop);

	/* Several encoders at once, each with threads / streams threads per
	 * product: the other way to use the cores. Images per second of all
	 * of them together, counted over the same wall-clock window. */
	if (streams > 1) {
		mm_set_threads(threads / streams > 0 ? threads / streams : 1);
		for (const char *p = batches; *p;) {
			int b = atoi(p);
			p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p);
			if (b < 1)
				continue;
			struct stream st[16];
			int ns = streams < 16 ? streams : 16;
			for (int i = 0; i < ns; i++) {
				st[i] = (struct stream){m, b, 0, seconds, 0, pix, 0};
				pthread_create(&st[i].th, NULL, stream_main, &st[i]);
			}
			double total = 0;
			for (int i = 0; i < ns; i++) {
				pthread_join(st[i].th, NULL);
				total += st[i].rate;
			}
			printf("image batch %-3d %7.1f images/s  %d streams x %d threads\n", b, total, ns,
			       threads / ns > 0 ? threads / ns : 1);
			if (json)
				printf("{\"runtime\":\"clipd-%s\",\"tower\":\"image\",\"batch\":%d,"
				       "\"streams\":%d,\"items_per_s\":%.2f}\n", pname, b, ns, total);
		}
		return 0;
	}

	/* Images. */
	for (const char *p = batches; *p;) {
		int b = atoi(p);
		p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p);
		if (b < 1)
			continue;
		double runs[1000];
		int n = 0;
		clip_encode_images(c, b, pix, out, NULL); /* warm-up */
		double start = bench_now();
		while (n < 1000 && (n < 3 || bench_now() - start < seconds)) {
			double s = bench_now();
			clip_encode_images(c, b, pix, out, NULL);
			runs[n++] = bench_now() - s;
		}
		qsort(runs, (size_t)n, sizeof runs[0], bench_cmp_double);
		double med = runs[n / 2], ips = b / med;
		printf("image batch %-3d %7.1f images/s  %7.2f ms/image  %6.1f GFLOP/s  (%d runs)\n", b, ips,
		       med / b * 1e3, ips * img_gflop, n);
		if (json)
			printf("{\"runtime\":\"clipd-%s\",\"tower\":\"image\",\"batch\":%d,\"items_per_s\":%.2f,"
			       "\"ms_per_item\":%.3f,\"gflops_per_s\":%.1f,\"peak_rss_mb\":%ld}\n",
			       pname, b, ips, med / b * 1e3, ips * img_gflop, peak_rss_mb());
	}

	/* Texts: a 7-token query (<|startoftext|>, 5 words, <|endoftext|>, as
	 * "a dog on a beach" is in CLIP's vocabulary) and a full-context one.
	 * The ids are built directly: a clip-mkmodel vocabulary splits words
	 * differently, and speed depends only on the length (for CLIP; SigLIP
	 * runs its whole context whatever the text). */
	int32_t *ids = malloc((size_t)C * sizeof *ids);
	int siglip = clip_model_family(m) == CLIP_FAMILY_SIGLIP;
	int bert = strcmp(clip_model_arch(m), "chinese_clip") == 0;
	/* Chinese-CLIP: a 10-character query ([CLS], 10 pieces, [SEP]). */
	const int lens[2] = {siglip ? 6 : bert ? 12 : 7, C};
	for (int k = 0; k < 2; k++) {
		int len = lens[k];
		memset(ids, 0, (size_t)C * sizeof *ids);
		if (siglip) { /* five pieces, </s> (1), pads (1: SigLIP's pad is </s>) */
			for (int i = 0; i < C; i++)
				ids[i] = i < len - 1 ? 300 + i : 1;
		} else if (bert) { /* [CLS] 101, pieces, [SEP] 102, [PAD] 0 */
			ids[0] = 101;
			for (int i = 1; i < len - 1; i++)
				ids[i] = 670 + i;
			ids[len - 1] = 102;
		} else {
			ids[0] = 49406;
			for (int i = 1; i < len - 1; i++)
				ids[i] = 320 + i;
			ids[len - 1] = 49407;
		}
		double runs[5000];
		int n = 0;
		clip_err terr;
		if (clip_encode_texts(c, 1, ids, out, &terr) != CLIP_OK) {
			fprintf(stderr, "bench/model: text: %s\n", terr.msg);
			return 1;
		}
		double start = bench_now();
		while (n < 5000 && (n < 3 || bench_now() - start < seconds / 2)) {
			double s = bench_now();
			clip_encode_texts(c, 1, ids, out, NULL);
			runs[n++] = bench_now() - s;
		}
		qsort(runs, (size_t)n, sizeof runs[0], bench_cmp_double);
		double med = runs[n / 2];
		printf("text %2d tokens  %7.2f ms  (p90 %.2f ms, %d runs)\n", len, med * 1e3,
		       runs[n * 9 / 10] * 1e3, n);
		if (json)
			printf("{\"runtime\":\"clipd-%s\",\"tower\":\"text\",\"batch\":1,\"tokens\":%d,"
			       "\"items_per_s\":%.2f,\"ms_per_item\":%.3f}\n", pname, len, 1 / med, med * 1e3);
		printf("                 %6.1f GFLOP/s (%.3f GFLOP)\n",
		       clip_model_text_gflop(m, len) / med, clip_model_text_gflop(m, len));
	}
	printf("peak RSS %ld MB\n", peak_rss_mb());
	free(ids);
	free(pix);
	free(out);
	clip_ctx_free(c);
	clip_model_close(m);
	return 0;
}
