/*
 * watch: the --watch directories. Image files that appear or change under a
 * watched directory (recursively; hidden entries and symbolic links are
 * skipped) are ingested as if uploaded: the same type sniffing and limits
 * (ingest.c), the same dedupe by content. A changed file replaces its old
 * image; a deleted file deletes its image (when no other watched file has
 * the same content). Refused files (not an image, too big) are failed items
 * of a job of kind "watch", and are not looked at again until they change.
 *
 * A full rescan at start and every rescan_s seconds is the ground truth;
 * inotify only makes changes show sooner. Either way a file is taken once
 * its size and mtime have been stable for about a second, so a file being
 * copied in is not ingested half-written. What was ingested is recorded in
 * the store (path, size, mtime, image), so a restart ingests only what
 * changed while the server was down. If a watched directory itself cannot
 * be read (unmounted, removed), nothing under it is deleted.
 *
 * Nothing outside a watched directory is ever read: each is opened once at
 * start, and every file and directory under it is looked at and opened
 * beneath that descriptor (safepath.h), never through a symbolic link and
 * never anything but a regular file (a FIFO cannot block the watcher). A
 * directory moved out of the tree loses its watches (IN_MOVED_FROM,
 * IN_MOVE_SELF: a rescan follows), and a watched directory moved away or
 * replaced is not scanned until it is back. Images are named by their
 * path under the watched directory.
 *
 * Watched directories are not --allow-root directories: POST /v1/ingest
 * cannot read them unless they are also given as --allow-root.
 *
 * Note: the image of a watched file is the one image of its content; an
 * upload of the same bytes gets that same image, and it goes when the
 * watched file goes.
 *
 * Thread-safety: start and stop from main only; the watcher runs on its own
 * thread (see the DESIGN comment in watch.c).
 */
#ifndef CLIPD_WATCH_H
#define CLIPD_WATCH_H

#include "app.h"
#include "errors.h"

typedef struct watcher watcher;

/* Starts watching dirs[0..n) (each must be a readable directory: an error
 * otherwise), rescanning every rescan_s seconds. a must have its store,
 * blobs, collections and workers open. *out is NULL on failure. */
int watch_start(app *a, const char *const *dirs, int n, int rescan_s, watcher **out,
                api_err *err);

/* Stops the watcher thread (after the file in hand) and frees it. Accepts
 * NULL. */
void watch_stop(watcher *w);

#endif
