/*
 * layout.c: which checkpoint layout a model directory holds, from the files
 * present (clip_int.h clip_layout_detect, clip.h clip_checkpoint_files).
 *
 * - config.json + model.safetensors: the Hugging Face layout (load_hf.c).
 * - open_clip_config.json + open_clip_model.safetensors: open_clip's own,
 *   the names open_clip.push_to_hf_hub writes (open_clip constants.py
 *   HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME) (config_openclip.c,
 *   load_openclip.c).
 * clipd reads CLIP's BPE tokenizer from vocab.json and merges.txt in both
 * layouts; an open_clip repository need not ship them (open_clip bundles
 * the same BPE), so their absence there is reported here, by name.
 * Some hub repositories hold both (transformers' and open_clip's copies of
 * the same weights); the Hugging Face pair is then taken. A directory with
 * only pickle checkpoints (*.bin, *.pt, *.pth: pytorch_model.bin,
 * open_clip_pytorch_model.bin) is refused: unpickling runs code, and every
 * such model is also published as safetensors.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "clip_int.h"

static const clip_layout layouts[] = {
	{CLIP_LAYOUT_HF, "Hugging Face", "config.json", "model.safetensors"},
	{CLIP_LAYOUT_OPENCLIP, "open_clip", "open_clip_config.json", "open_clip_model.safetensors"},
};

static int is_file(const char *dir, const char *name)
{
	char p[4096];
	struct stat st;
	if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
		return 0;
	return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);
	return n > t && strcmp(s + n - t, tail) == 0;
}

int clip_layout_detect(const char *dir, const clip_layout **out, clip_err *err)
{
	*out = NULL;
	struct stat st;
	if (!dir || !*dir)
		return clip_fail(err, CLIP_EINVAL, "no model directory given");
	if (strlen(dir) > 3800)
		return clip_fail(err, CLIP_EINVAL, "model directory path is too long");
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return clip_fail(err, CLIP_EMODEL, "model directory %s: %s", dir,
		                 stat(dir, &st) != 0 ? strerror(errno) : "not a directory");
	for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
		if (is_file(dir, layouts[i].config) && is_file(dir, layouts[i].weights)) {
			/* An open_clip repository need not carry tokenizer
			 * files (open_clip bundles its own copy of the BPE): say
			 * which ones clipd needs. */
			if (layouts[i].kind == CLIP_LAYOUT_OPENCLIP &&
			    (!is_file(dir, "vocab.json") || !is_file(dir, "merges.txt")))
				return clip_fail(err, CLIP_EMODEL,
				                 "%s: an open_clip checkpoint without vocab.json and "
				                 "merges.txt: copy CLIP's BPE tokenizer files beside it (those "
				                 "of openai/clip-vit-base-patch32)", dir);
			*out = &layouts[i];
			return CLIP_OK;
		}
	/* The first pickle checkpoint, for the message. */
	char pickle[256] = "";
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && !*pickle && (e = readdir(d)))
		if (ends_with(e->d_name, ".bin") || ends_with(e->d_name, ".pt") ||
		    ends_with(e->d_name, ".pth"))
			snprintf(pickle, sizeof pickle, "%s", e->d_name);
	if (d)
		closedir(d);
	if (*pickle)
		return clip_fail(err, CLIP_EMODEL,
		                 "%s: only a pickle checkpoint (%s), which clipd does not read: use the "
		                 "checkpoint's safetensors file (model.safetensors or "
		                 "open_clip_model.safetensors)", dir, pickle);
	return clip_fail(err, CLIP_EMODEL,
	                 "%s holds no checkpoint clipd reads: looked for config.json + model.safetensors "
	                 "(Hugging Face) and open_clip_config.json + open_clip_model.safetensors "
	                 "(open_clip)", dir);
}

int clip_checkpoint_files(const char *dir, const char **config, const char **weights,
                          clip_err *err)
{
	const clip_layout *l;
	int rc = clip_layout_detect(dir, &l, err);
	*config = rc == CLIP_OK ? l->config : NULL;
	*weights = rc == CLIP_OK ? l->weights : NULL;
	return rc;
}
