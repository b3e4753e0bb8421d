/*
 * ref_kit.h: what the model tests share about the reference kits
 * ($CLIPD_REFERENCE/<kit>/: expected.json and pixels/NAME.f32, see its
 * README): finding them, a temp dir, and the comparisons. Header-only, for
 * the test programs (test_model, test_siglip, test_openclip).
 */
#ifndef CLIPD_REF_KIT_H
#define CLIPD_REF_KIT_H

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define REF_UNUSED __attribute__((unused))

/* max |a[i] - b[i]| against a JSON array of numbers; NaN counts as a
 * difference. */
static REF_UNUSED float max_abs_diff(const float *a, json_t *b, int n)
{
	float m = 0;
	for (int i = 0; i < n; i++) {
		float d = fabsf(a[i] - (float)json_number_value(json_array_get(b, (size_t)i)));
		if (!(d <= m))
			m = d;
	}
	return m;
}

static REF_UNUSED float dot(const float *a, const float *b, int n)
{
	double s = 0;
	for (int i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return (float)s;
}

/* Reads n little-endian float32 values (a kit's pixels/NAME.f32). */
static REF_UNUSED int read_f32(const char *path, float *out, size_t n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	size_t got = fread(out, sizeof(float), n, f);
	fclose(f);
	return got == n ? 0 : -1;
}

/* The kit's paths and a fresh temp dir: ref = $CLIPD_REFERENCE (else
 * ../shared/reference), kit = ref/name, tmp = $TMPDIR/prefix.XXXXXX made;
 * returns kit/expected.json loaded, or NULL with the reason printed as a
 * failed TAP plan. */
static REF_UNUSED json_t *ref_kit_open(const char *name, const char *prefix, char *ref,
                                       size_t nref, char *kit, size_t nkit, char *tmp, size_t ntmp)
{
	const char *r = getenv("CLIPD_REFERENCE");
	snprintf(ref, nref, "%s", r && *r ? r : "../shared/reference");
	snprintf(kit, nkit, "%s/%s", ref, name);
	const char *t = getenv("TMPDIR");
	snprintf(tmp, ntmp, "%s/%s.XXXXXX", t && *t ? t : "/tmp", prefix);
	if (!mkdtemp(tmp)) {
		printf("not ok 1 - mkdtemp %s\n1..1\n", tmp);
		return NULL;
	}
	char p[4200];
	snprintf(p, sizeof p, "%s/expected.json", kit);
	json_error_t jerr;
	json_t *e = json_load_file(p, 0, &jerr);
	if (!e)
		printf("not ok 1 - reference kit at %s: %s\n1..1\n", kit, jerr.text);
	return e;
}

#endif
