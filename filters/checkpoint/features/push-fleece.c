/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* sync none's copy-before-write into the target (see push-fleece.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "rounding.h"
#include "bitmap.h"
#include "features/push-fleece.h"

/* QEMU's job cluster for a raw target. */
#define CLUSTER (64 * 1024)

struct push_fleece {
  struct node *node;
  uint64_t size;                /* at the job's start */
  push_fleece_write_fn write;
  void *opaque;
  pthread_mutex_t lock;
  /* Under lock. */
  bool stopped;
  int err;
  uint64_t copied_bytes;
  struct bitmap *copied;        /* clusters saved */
  char *buf;                    /* one cluster */
};

struct push_fleece *
push_fleece_new (struct node *n, push_fleece_write_fn write, void *opaque,
                 struct qmp_error *err)
{
  struct push_fleece *f = calloc (1, sizeof *f);

  if (f == NULL ||
      (f->copied = bitmap_new (n->size, CLUSTER)) == NULL ||
      (f->buf = malloc (CLUSTER)) == NULL) {
    if (f)
      bitmap_free (f->copied);
    free (f);
    qmp_error (err, "out of memory");
    return NULL;
  }
  f->node = n;
  f->size = n->size;
  f->write = write;
  f->opaque = opaque;
  pthread_mutex_init (&f->lock, NULL);
  return f;
}

void
push_fleece_free (struct push_fleece *f)
{
  if (f == NULL)
    return;
  pthread_mutex_destroy (&f->lock);
  bitmap_free (f->copied);
  free (f->buf);
  free (f);
}

/* Lock held: save cluster POS.  -1 with errno. */
static int
save_cluster (struct push_fleece *f, nbdkit_next *next, uint64_t pos)
{
  uint32_t len = MIN (CLUSTER, f->size - pos);
  int err = 0;

  if (next->pread (next, f->buf, len, pos, 0, &err) == -1) {
    errno = err ? err : EIO;
    return -1;
  }
  if (f->write (f->opaque, f->buf, len, pos) == -1)
    return -1;
  if (bitmap_set_range (f->copied, pos, len) == -1) {
    errno = ENOMEM;
    return -1;
  }
  f->copied_bytes += len;
  return 0;
}

static int
before_write (void *opaque, nbdkit_next *next, uint64_t offset,
              uint32_t count, int *err)
{
  struct push_fleece *f = opaque;
  uint64_t pos, end = MIN (offset + count, f->size);

  pthread_mutex_lock (&f->lock);
  for (pos = ROUND_DOWN (offset, CLUSTER);
       !f->stopped && pos < end; pos += CLUSTER) {
    if (bitmap_test (f->copied, pos))
      continue;
    if (save_cluster (f, next, pos) == -1) {
      f->err = errno ? errno : EIO;
      f->stopped = true;
      nbdkit_error ("checkpoint: sync none: saving the old data at %"
                    PRIu64 ": %s; the job fails, the write goes on",
                    pos, strerror (f->err));
    }
  }
  pthread_mutex_unlock (&f->lock);
  return 0;
}

int
push_fleece_attach (struct push_fleece *f, struct qmp_error *err)
{
  if (node_add_write_hook (f->node, before_write, f) == -1) {
    qmp_error (err, "out of memory");
    return -1;
  }
  return 0;
}

void
push_fleece_detach (struct push_fleece *f)
{
  node_remove_write_hook (f->node, f);
}

void
push_fleece_stop (struct push_fleece *f)
{
  pthread_mutex_lock (&f->lock);
  f->stopped = true;
  pthread_mutex_unlock (&f->lock);
}

uint64_t
push_fleece_copied (struct push_fleece *f)
{
  uint64_t r;

  pthread_mutex_lock (&f->lock);
  r = f->copied_bytes;
  pthread_mutex_unlock (&f->lock);
  return r;
}

int
push_fleece_error (struct push_fleece *f)
{
  int r;

  pthread_mutex_lock (&f->lock);
  r = f->err;
  pthread_mutex_unlock (&f->lock);
  return r;
}
