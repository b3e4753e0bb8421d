/*
 * bench/decode: what JPEG shrink-on-load (clipd --fast-decode,
 * clip_image_limits.fast_decode) gains in decode time and costs in
 * embeddings, against the exact path (full decode, PIL's bicubic).
 *
 *   build/bench/decode --model DIR [--model DIR ...] [--precision f32]
 *       [--margins 1,2,3] [--runs 3] [--photos 8] [--size 4000x3000]
 *       [--detail 8] [--sources DIR] [--tmp DIR] [--keep] [FILE ...]
 *
 * Without FILEs, --photos photo-like JPEGs of --size are written first
 * (Q 90): each a picture of --sources (default $CLIPD_REFERENCE/images, else
 * ../shared/reference/images) scaled up to cover the size, plus Gaussian
 * luminance noise at every octave from 1 to 64 pixels (--detail is each
 * octave's sigma in grey levels) and chroma noise at 8 pixels, so that there
 * is detail at every scale as in a camera's photo; an upscaled picture
 * alone would be smooth and flatter the shrink.
 *
 * For each margin m (the decoded short side kept >= m x the model's input
 * side; clipd uses IMG_FAST_DECODE_MARGIN of model/preprocess_int.h), and
 * for the exact path, each image is decoded and preprocessed --runs times
 * in this thread: the median time is its figure. The tensors then go
 * through each --model's image encoder (precision --precision, default
 * f32, so that only the decode differs), and the cosine of the fast
 * embedding against the exact one is printed: per margin, the shrink
 * factors used, the mean decode time, and the lowest and mean cosine per
 * model. The exact tensors are checked to equal clip_preprocess_file's.
 *
 * Output: a plain table on stdout (and one JSON object per figure with
 * --json), progress on stderr. Nothing is checked: this is not a test.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vips/vips.h>

#include "clip.h"
#include "preprocess_int.h"
#include "timing.h"

#define MAX_MODELS 4
#define MAX_MARGINS 8
#define MAX_FILES 256

struct opts {
	const char *models[MAX_MODELS];
	int nmodels;
	clip_precision precision;
	double margins[MAX_MARGINS];
	int nmargins;
	int runs, photos, width, height, keep, json;
	double detail;
	const char *sources, *tmp;
	const char *files[MAX_FILES];
	int nfiles;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void usage(FILE *f)
{
	fputs("usage: bench/decode --model DIR [--model DIR ...] [--precision f32] [--margins 1,2,3]\n"
	      "       [--runs 3] [--photos 8] [--size 4000x3000] [--detail 8] [--sources DIR]\n"
	      "       [--tmp DIR] [--keep] [--json] [FILE ...]\n"
	      "Decode time and embedding cosine of JPEG shrink-on-load against the exact path.\n",
	      f);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	const char *t = getenv("TMPDIR");
	*o = (struct opts){.precision = CLIP_PRECISION_F32, .runs = 3, .photos = 8, .width = 4000,
	                   .height = 3000, .detail = 8, .tmp = t && *t ? t : "/tmp",
	                   .margins = {1, 2, 3}, .nmargins = 3};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(a, "--keep")) {
			o->keep = 1;
			continue;
		} else if (!strcmp(a, "--json")) {
			o->json = 1;
			continue;
		} else if (strncmp(a, "--", 2) != 0) {
			if (o->nfiles == MAX_FILES) {
				fprintf(stderr, "bench/decode: at most %d files\n", MAX_FILES);
				return -1;
			}
			o->files[o->nfiles++] = a;
			continue;
		}
		if (!v) {
			fprintf(stderr, "bench/decode: %s needs a value\n", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--model")) {
			if (o->nmodels == MAX_MODELS) {
				fprintf(stderr, "bench/decode: at most %d models\n", MAX_MODELS);
				return -1;
			}
			o->models[o->nmodels++] = v;
		} else if (!strcmp(a, "--precision")) {
			if (clip_precision_parse(v, &o->precision)) {
				fprintf(stderr, "bench/decode: --precision takes auto, f32, bf16 or int8\n");
				return -1;
			}
		} else if (!strcmp(a, "--margins")) {
			o->nmargins = 0;
			for (const char *p = v; *p;) {
				char *end;
				double m = strtod(p, &end);
				if (end == p || m < 1 || m > 64 || o->nmargins == MAX_MARGINS ||
				    (*end && *end != ',')) {
					fprintf(stderr, "bench/decode: --margins takes numbers >= 1 like 1,2,3\n");
					return -1;
				}
				o->margins[o->nmargins++] = m;
				p = *end ? end + 1 : end;
			}
		} else if (!strcmp(a, "--runs"))
			o->runs = atoi(v);
		else if (!strcmp(a, "--photos"))
			o->photos = atoi(v);
		else if (!strcmp(a, "--size")) {
			if (sscanf(v, "%dx%d", &o->width, &o->height) != 2) {
				fprintf(stderr, "bench/decode: --size takes WxH\n");
				return -1;
			}
		} else if (!strcmp(a, "--detail"))
			o->detail = atof(v);
		else if (!strcmp(a, "--sources"))
			o->sources = v;
		else if (!strcmp(a, "--tmp"))
			o->tmp = v;
		else {
			fprintf(stderr, "bench/decode: unknown option %s\n", a);
			usage(stderr);
			return -1;
		}
	}
	if (!o->nmodels || o->runs < 1 || o->photos < 1 || o->photos > MAX_FILES ||
	    o->width < 16 || o->height < 16 || o->width > 20000 || o->height > 20000) {
		usage(stderr);
		return -1;
	}
	return 0;
}

/* ---- photo-like JPEGs ----------------------------------------------------- */

/* in + Gaussian noise of `sigma` at scale s pixels (bands: 1 for luminance,
 * replicated to 3; 3 for chroma). Unrefs in; NULL on failure. */
static VipsImage *add_noise(VipsImage *in, int s, double sigma, int bands, int seed)
{
	int w = in->Xsize, h = in->Ysize;
	int nw = (w + s - 1) / s, nh = (h + s - 1) / s;
	VipsImage *n[3] = {NULL}, *j = NULL, *u = NULL, *c = NULL, *out = NULL;
	for (int b = 0; b < bands; b++)
		if (vips_gaussnoise(&n[b], nw, nh, "sigma", sigma, "mean", 0.0, "seed", seed * 7 + b,
		                    NULL))
			goto out;
	for (int b = bands; b < 3; b++) /* luminance: the same noise in every band */
		n[b] = n[0], g_object_ref(n[0]);
	if (vips_bandjoin(n, &j, 3, NULL))
		goto out;
	if (s > 1 ? vips_resize(j, &u, s, "kernel", VIPS_KERNEL_CUBIC, NULL) : vips_copy(j, &u, NULL))
		goto out;
	if (vips_extract_area(u, &c, 0, 0, w, h, NULL) || vips_add(in, c, &out, NULL))
		out = NULL;
out:
	for (int b = 0; b < 3; b++)
		if (n[b])
			g_object_unref(n[b]);
	if (j)
		g_object_unref(j);
	if (u)
		g_object_unref(u);
	if (c)
		g_object_unref(c);
	g_object_unref(in);
	return out;
}

/* Writes dir/photo-NN.jpg from source picture src_path. 0 or -1. */
static int make_photo(const char *src_path, const char *out_path, int w, int h, double detail,
                      int seed)
{
	VipsImage *t[4] = {NULL}, *im = NULL, *u8 = NULL;
	int rc = -1;
	if (vips_thumbnail(src_path, &t[0], w, "height", h, "crop", VIPS_INTERESTING_CENTRE, "size",
	                   VIPS_SIZE_BOTH, NULL) ||
	    vips_colourspace(t[0], &t[1], VIPS_INTERPRETATION_sRGB, NULL) ||
	    (vips_image_hasalpha(t[1]) ? vips_flatten(t[1], &t[2], NULL) : vips_copy(t[1], &t[2], NULL)) ||
	    vips_extract_band(t[2], &t[3], 0, "n", 3, NULL) || vips_cast_float(t[3], &im, NULL))
		goto out;
	for (int s = 1, k = 0; s <= 64 && im; s *= 2, k++)
		im = add_noise(im, s, detail, 1, seed * 16 + k);
	if (im)
		im = add_noise(im, 8, detail / 2, 3, seed * 16 + 15);
	if (!im || vips_cast_uchar(im, &u8, NULL) || vips_jpegsave(u8, out_path, "Q", 90, NULL))
		goto out;
	rc = 0;
out:
	for (int k = 0; k < 4; k++)
		if (t[k])
			g_object_unref(t[k]);
	if (im)
		g_object_unref(im);
	if (u8)
		g_object_unref(u8);
	return rc;
}

static int make_photos(struct opts *o, const char *dir, char paths[][4096])
{
	char sdir[4096];
	const char *ref = getenv("CLIPD_REFERENCE");
	if (o->sources)
		snprintf(sdir, sizeof sdir, "%s", o->sources);
	else
		snprintf(sdir, sizeof sdir, "%s/images", ref && *ref ? ref : "../shared/reference");
	GDir *gd = g_dir_open(sdir, 0, NULL);
	char *names[64];
	int nsrc = 0;
	if (!gd) {
		fprintf(stderr, "bench/decode: cannot read %s (--sources)\n", sdir);
		return -1;
	}
	for (const char *n; (n = g_dir_read_name(gd)) && nsrc < 64;)
		names[nsrc++] = g_strdup(n);
	g_dir_close(gd);
	qsort(names, (size_t)nsrc, sizeof names[0], cmp_str);
	int rc = 0;
	for (int i = 0; i < o->photos && nsrc; i++) {
		char src[4096 + 256];
		snprintf(src, sizeof src, "%s/%s", sdir, names[i % nsrc]);
		snprintf(paths[i], 4096, "%s/photo-%02d.jpg", dir, i);
		fprintf(stderr, "# writing %s (%dx%d) from %s\n", paths[i], o->width, o->height, src);
		if (make_photo(src, paths[i], o->width, o->height, o->detail, i + 1)) {
			fprintf(stderr, "bench/decode: writing %s: %s\n", paths[i], vips_error_buffer());
			rc = -1;
			break;
		}
		o->files[o->nfiles++] = paths[i];
	}
	for (int k = 0; k < nsrc; k++)
		g_free(names[k]);
	return rc || !o->nfiles ? -1 : 0;
}

/* ---- measuring ------------------------------------------------------------ */

/* mean, std and size as the model reads them from preprocessor_config.json
 * (OpenAI's when absent); checked against clip_preprocess_file below. */
static void model_img_opts(const char *dir, const clip_model *m, img_opts *io)
{
	static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
	static const float stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	char path[4096];
	memset(io, 0, sizeof *io);
	io->size = clip_model_image_size(m);
	memcpy(io->mean, mean, sizeof mean);
	memcpy(io->std, stdv, sizeof stdv);
	snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
	json_t *root = json_load_file(path, 0, NULL);
	json_t *jm = json_object_get(root, "image_mean"), *js = json_object_get(root, "image_std");
	for (int c = 0; c < 3 && json_array_size(jm) == 3 && json_array_size(js) == 3; c++) {
		io->mean[c] = (float)json_number_value(json_array_get(jm, (size_t)c));
		io->std[c] = (float)json_number_value(json_array_get(js, (size_t)c));
	}
	json_decref(root);
}

static double cosine(const float *a, const float *b, int n)
{
	double ab = 0, aa = 0, bb = 0;
	for (int i = 0; i < n; i++) {
		ab += (double)a[i] * b[i];
		aa += (double)a[i] * a[i];
		bb += (double)b[i] * b[i];
	}
	return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

/* The shrink factor preprocess.c picks (repeated here only to print it). */
static int shrink_for(const char *path, int min_side)
{
	VipsImage *im = vips_image_new_from_file(path, NULL);
	int s = 1;
	if (!im) {
		vips_error_clear();
		return 1;
	}
	int shorter = im->Xsize < im->Ysize ? im->Xsize : im->Ysize;
	const char *loader = NULL;
	if (vips_image_get_string(im, "vips-loader", &loader) == 0 && strstr(loader, "jpeg"))
		for (s = 8; s > 1 && (shorter + s - 1) / s < min_side; s /= 2)
			;
	g_object_unref(im);
	return min_side > 0 ? s : 1;
}

int main(int argc, char **argv)
{
	struct opts o;
	static char paths[MAX_FILES][4096];
	clip_model *m[MAX_MODELS] = {NULL};
	clip_ctx *ctx[MAX_MODELS] = {NULL};
	img_opts io[MAX_MODELS];
	char *tmp = NULL;
	float *exact = NULL, *fast = NULL, *ref = NULL, *e_ex = NULL, *e_fa = NULL;
	double *runs = NULL, *t_exact = NULL, t_exact_mean = 0;
	int rc = 1;

	if (parse_opts(argc, argv, &o))
		return 2;
	if (VIPS_INIT(argv[0]))
		return 1;
	clip_err ce;
	if (clip_images_init(&ce) != CLIP_OK) { /* the model's own libvips set-up, as in clipd */
		fprintf(stderr, "bench/decode: %s\n", ce.msg);
		return 1;
	}
	if (o.nfiles == 0) {
		tmp = g_strdup_printf("%s/clipd-decode-XXXXXX", o.tmp);
		if (!mkdtemp(tmp)) {
			fprintf(stderr, "bench/decode: cannot create a directory under %s\n", o.tmp);
			goto out;
		}
		if (make_photos(&o, tmp, paths))
			goto out;
	}
	int S = 0, maxdim = 0;
	for (int k = 0; k < o.nmodels; k++) {
		clip_options mo = {o.precision};
		if (clip_model_open_opts(o.models[k], &mo, &m[k], &ce) != CLIP_OK ||
		    clip_ctx_new(m[k], 1, &ctx[k], &ce) != CLIP_OK) {
			fprintf(stderr, "bench/decode: %s: %s\n", o.models[k], ce.msg);
			goto out;
		}
		model_img_opts(o.models[k], m[k], &io[k]);
		if (k > 0 && io[k].size != S) {
			fprintf(stderr, "bench/decode: the models must have the same input size\n");
			goto out;
		}
		S = io[k].size;
		maxdim = clip_model_dim(m[k]) > maxdim ? clip_model_dim(m[k]) : maxdim;
	}
	size_t plane = (size_t)3 * S * S;
	int nf = o.nfiles, nm = o.nmodels;
	/* exact[model][file][plane], fast likewise (one margin at a time). */
	exact = malloc((size_t)nm * nf * plane * sizeof *exact);
	fast = malloc((size_t)nm * nf * plane * sizeof *fast);
	ref = malloc(plane * sizeof *ref);
	e_ex = malloc((size_t)nm * nf * maxdim * sizeof *e_ex);
	e_fa = malloc((size_t)maxdim * sizeof *e_fa);
	runs = malloc((size_t)o.runs * sizeof *runs);
	t_exact = calloc((size_t)nf, sizeof *t_exact);
	if (!exact || !fast || !ref || !e_ex || !e_fa || !runs || !t_exact) {
		fprintf(stderr, "bench/decode: out of memory\n");
		goto out;
	}
	printf("# bench/decode: %d JPEGs, models:", nf);
	for (int k = 0; k < nm; k++)
		printf(" %s (dim %d)", o.models[k], clip_model_dim(m[k]));
	printf("; precision %s; median of %d decodes; input side %d\n",
	       clip_precision_name(clip_model_precision(m[0])), o.runs, S);
	for (int f = 0; f < nf; f++) {
		VipsImage *h = vips_image_new_from_file(o.files[f], NULL);
		if (h) {
			printf("#   %s: %dx%d\n", o.files[f], h->Xsize, h->Ysize);
			g_object_unref(h);
		}
	}
	fflush(stdout);

	/* mi = -1 is the exact path: its times and embeddings are the reference. */
	for (int mi = -1; mi < o.nmargins; mi++) {
		double margin = mi < 0 ? 0 : o.margins[mi];
		int min_side = (int)ceil(margin * S);
		double t_sum = 0, ratio_sum = 0;
		int shrinks[4] = {0}; /* 1, 2, 4, 8 */
		fprintf(stderr, "# %s\n", mi < 0 ? "exact path" : "shrink on load");
		for (int f = 0; f < nf; f++) {
			int s = shrink_for(o.files[f], min_side);
			shrinks[s == 8 ? 3 : s == 4 ? 2 : s == 2 ? 1 : 0]++;
			for (int k = 0; k < nm; k++) {
				img_opts op = io[k];
				float *dst = (mi < 0 ? exact : fast) + ((size_t)k * nf + f) * plane;
				op.shrink_min_side = min_side;
				for (int r = 0; r < (k == 0 ? o.runs : 1); r++) {
					double t0 = bench_now();
					if (img_preprocess_file(o.files[f], &op, dst, NULL, NULL, &ce) != CLIP_OK) {
						fprintf(stderr, "bench/decode: %s: %s\n", o.files[f], ce.msg);
						goto out;
					}
					runs[r] = bench_now() - t0;
				}
				if (k == 0) {
					qsort(runs, (size_t)o.runs, sizeof *runs, bench_cmp_double);
					double t = runs[o.runs / 2];
					t_sum += t;
					if (mi < 0)
						t_exact[f] = t;
					else
						ratio_sum += t_exact[f] / t;
				}
				if (mi < 0) {
					/* The bench's options must be the model's. */
					if (clip_preprocess_file(m[k], o.files[f], NULL, ref, NULL, NULL, &ce) !=
					        CLIP_OK ||
					    memcmp(ref, dst, plane * sizeof *ref) != 0) {
						fprintf(stderr, "bench/decode: the exact tensor of %s differs from "
						                "clip_preprocess_file's\n", o.files[f]);
						goto out;
					}
				}
			}
		}
		printf("\n%s", mi < 0 ? "exact (full decode)" : "");
		if (mi >= 0)
			printf("margin %g (short side >= %d px): shrink 1/2/4/8 on %d/%d/%d/%d images", margin,
			       min_side, shrinks[0], shrinks[1], shrinks[2], shrinks[3]);
		/* Pixel difference in grey levels (0..255), model 0's tensors. */
		double pd_sum = 0, pd_max = 0;
		for (int f = 0; mi >= 0 && f < nf; f++) {
			const float *a = exact + (size_t)f * plane, *b = fast + (size_t)f * plane;
			for (size_t i = 0; i < plane; i++) {
				double d = fabs((double)a[i] - b[i]) * io[0].std[i / ((size_t)S * S)] * 255;
				pd_sum += d;
				pd_max = d > pd_max ? d : pd_max;
			}
		}
		if (mi < 0)
			t_exact_mean = t_sum / nf;
		printf("\n  decode+preprocess: mean %.1f ms per image", t_sum / nf * 1e3);
		if (mi >= 0)
			printf(", %.2fx faster than exact (mean of per-image ratios)\n"
			       "  input tensor vs exact: mean |diff| %.3f, max %.1f grey levels",
			       ratio_sum / nf, pd_sum / ((double)nf * plane), pd_max);
		printf("\n");
		for (int k = 0; k < nm; k++) {
			int D = clip_model_dim(m[k]);
			double cmin = 2, csum = 0;
			for (int f = 0; f < nf; f++) {
				float *ee = e_ex + ((size_t)k * nf + f) * maxdim;
				const float *px = (mi < 0 ? exact : fast) + ((size_t)k * nf + f) * plane;
				if (clip_encode_images(ctx[k], 1, px, mi < 0 ? ee : e_fa, &ce) != CLIP_OK) {
					fprintf(stderr, "bench/decode: encode: %s\n", ce.msg);
					goto out;
				}
				if (mi < 0)
					continue;
				double c = cosine(ee, e_fa, D);
				cmin = c < cmin ? c : cmin;
				csum += c;
			}
			if (mi < 0)
				continue;
			printf("  %s: cosine fast vs exact: min %.6f, mean %.6f\n", o.models[k], cmin,
			       csum / nf);
			if (o.json)
				printf("{\"bench\":\"decode\",\"margin\":%g,\"min_side\":%d,\"model\":\"%s\","
				       "\"images\":%d,\"width\":%d,\"height\":%d,\"ms_exact\":%.3f,"
				       "\"ms_fast\":%.3f,\"speedup\":%.3f,\"pixel_mad\":%.4f,\"cos_min\":%.6f,"
				       "\"cos_mean\":%.6f}\n",
				       margin, min_side, o.models[k], nf, o.width, o.height, t_exact_mean * 1e3,
				       t_sum / nf * 1e3, ratio_sum / nf, pd_sum / ((double)nf * plane), cmin,
				       csum / nf);
		}
		fflush(stdout);
	}
	rc = 0;
out:
	for (int k = 0; k < MAX_MODELS; k++) {
		clip_ctx_free(ctx[k]);
		clip_model_close(m[k]);
	}
	free(exact);
	free(fast);
	free(ref);
	free(e_ex);
	free(e_fa);
	free(runs);
	free(t_exact);
	if (tmp && !o.keep) {
		for (int f = 0; f < o.nfiles; f++)
			unlink(o.files[f]);
		rmdir(tmp);
	} else if (tmp) {
		fprintf(stderr, "# kept %s\n", tmp);
	}
	g_free(tmp);
	vips_shutdown();
	return rc;
}
