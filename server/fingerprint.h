/*
 * fingerprint: a cheap identity for a CLIP checkpoint directory, so that a
 * data directory embedded with one model is never searched with another.
 * SHA-256 over the config (config.json, or open_clip_config.json in
 * open_clip's layout: the files clip_checkpoint_files names), the
 * safetensors header (its 8-byte length and JSON, which names every tensor
 * with its dtype, shape and offsets) and the weight file's size: a few kilobytes read, not the weights. Two checkpoints
 * that differ only in weight values with identical headers would collide;
 * real checkpoints differ in config or layout, and retrained ones are
 * published under new names. Thread-safe.
 */
#ifndef CLIPD_FINGERPRINT_H
#define CLIPD_FINGERPRINT_H

#include <stddef.h>

#include "errors.h"

/* Writes "clip-" and 16 hex digits of the hash into id (id_size >= 22). */
int fingerprint_model(const char *dir, char *id, size_t id_size, api_err *err);

#endif
