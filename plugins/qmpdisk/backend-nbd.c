/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: backend for disks on an NBD server (libnbd). */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>

#include <libnbd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "rounding.h"
#include "backend.h"

/* Requests are split to this size unless the server asks for less:
 * the NBD protocol promises nothing larger, and qemu-nbd refuses it.
 */
#define MAX_REQUEST (32 * 1024 * 1024)

struct nbd_backend {
  struct backend b;             /* must be first */
  char *uri;
  struct nbd_handle *nbd;
  pthread_mutex_t lock;         /* serialises all calls on nbd */
  bool fua, zero, fast_zero, meta;
  uint32_t max_request;
};

/* libnbd's message for the last failed call in this thread. */
static const char *
last_error (void)
{
  const char *msg = nbd_get_error ();

  return msg ? msg : "unknown error";
}

static int
remote_error (struct nbd_backend *n, const char *op)
{
  int err = nbd_get_errno ();

  nbdkit_error ("%s: %s: %s", n->uri, op, last_error ());
  nbdkit_set_error (err ? err : EIO);
  return -1;
}

static int
remote_pread (struct backend *b, void *buf, uint32_t count, uint64_t offset)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);
  char *p = buf;

  while (count > 0) {
    uint32_t len = MIN (count, n->max_request);

    if (nbd_pread (n->nbd, p, len, offset, 0) == -1)
      return remote_error (n, "pread");
    p += len;
    count -= len;
    offset += len;
  }
  return 0;
}

/* Call with n->lock held. */
static int
flush_locked (struct nbd_backend *n)
{
  if (n->b.can_flush && nbd_flush (n->nbd, 0) == -1)
    return remote_error (n, "flush");
  return 0;
}

static int
remote_flush (struct backend *b)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

  return flush_locked (n);
}

/* FUA is passed on when the server has it, else done by a flush. */
static uint32_t
fua_flag (struct nbd_backend *n, uint32_t flags)
{
  return (flags & NBDKIT_FLAG_FUA) && n->fua ? LIBNBD_CMD_FLAG_FUA : 0;
}

static bool
needs_flush (struct nbd_backend *n, uint32_t flags)
{
  return (flags & NBDKIT_FLAG_FUA) && !n->fua;
}

static int
remote_pwrite (struct backend *b, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);
  const char *p = buf;

  while (count > 0) {
    uint32_t len = MIN (count, n->max_request);

    if (nbd_pwrite (n->nbd, p, len, offset, fua_flag (n, flags)) == -1)
      return remote_error (n, "pwrite");
    p += len;
    count -= len;
    offset += len;
  }
  return needs_flush (n, flags) ? flush_locked (n) : 0;
}

static int
remote_zero (struct backend *b, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);
  bool fast = flags & NBDKIT_FLAG_FAST_ZERO;
  uint32_t f = fua_flag (n, flags);

  /* nbdkit writes the zeroes (or fails the fast zero). */
  if (!n->zero || (fast && !n->fast_zero)) {
    nbdkit_set_error (ENOTSUP);
    return -1;
  }
  if (!(flags & NBDKIT_FLAG_MAY_TRIM))
    f |= LIBNBD_CMD_FLAG_NO_HOLE;
  if (fast)
    f |= LIBNBD_CMD_FLAG_FAST_ZERO;
  if (nbd_zero (n->nbd, count, offset, f) == -1) {
    int err = nbd_get_errno ();

    /* A refused fast zero is an answer, not a failure. */
    if (fast && (err == ENOTSUP || err == EOPNOTSUPP)) {
      nbdkit_set_error (ENOTSUP);
      return -1;
    }
    return remote_error (n, "zero");
  }
  return needs_flush (n, flags) ? flush_locked (n) : 0;
}

static int
remote_trim (struct backend *b, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

  if (!n->b.can_trim)           /* only advice: ignoring it is fine */
    return 0;
  if (nbd_trim (n->nbd, count, offset, fua_flag (n, flags)) == -1)
    return remote_error (n, "trim");
  return needs_flush (n, flags) ? flush_locked (n) : 0;
}

struct extents_data {
  struct nbdkit_extents *extents;
  size_t added;
};

static int
extent_cb (void *opaque, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct extents_data *data = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; i += 2) {
    uint32_t type = entries[i + 1] & (NBDKIT_EXTENT_HOLE |
                                      NBDKIT_EXTENT_ZERO);

    if (nbdkit_add_extent (data->extents, offset, entries[i], type) == -1) {
      *error = errno ? errno : EIO;
      return -1;
    }
    offset += entries[i];
    data->added++;
  }
  return 0;
}

static int
remote_extents (struct backend *b, uint32_t count, uint64_t offset,
                uint32_t flags, struct nbdkit_extents *extents)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  struct extents_data data = { .extents = extents };
  uint32_t f = flags & NBDKIT_FLAG_REQ_ONE ? LIBNBD_CMD_FLAG_REQ_ONE : 0;

  if (n->meta) {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

    if (nbd_block_status (n->nbd, count, offset,
                          (nbd_extent_callback) { .callback = extent_cb,
                                                  .user_data = &data },
                          f) == -1)
      return remote_error (n, "block_status");
  }
  /* Without base:allocation everything is data. */
  if (data.added == 0)
    return nbdkit_add_extent (extents, offset, count, 0);
  return 0;
}

static int
remote_cache (struct backend *b, uint32_t count, uint64_t offset)
{
  struct nbd_backend *n = (struct nbd_backend *) b;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&n->lock);

  if (n->b.can_cache && nbd_cache (n->nbd, count, offset, 0) == -1)
    return remote_error (n, "cache");
  return 0;
}

static int
remote_open_rw (struct backend *b, char **errmsg)
{
  return 0;                     /* checked when connecting */
}

static int
remote_resize (struct backend *b, uint64_t size, char **errmsg)
{
  set_errmsg (errmsg, "Cannot resize NBD nodes");
  return -1;
}

static void
remote_close (struct backend *b)
{
  struct nbd_backend *n = (struct nbd_backend *) b;

  if (n->nbd) {
    nbd_shutdown (n->nbd, 0);   /* polite; failure does not matter */
    nbd_close (n->nbd);
  }
  pthread_mutex_destroy (&n->lock);
  free (n->uri);
  free (n);
}

static const struct backend_ops remote_ops = {
  .pread = remote_pread,
  .pwrite = remote_pwrite,
  .zero = remote_zero,
  .trim = remote_trim,
  .flush = remote_flush,
  .extents = remote_extents,
  .cache = remote_cache,
  .open_rw = remote_open_rw,
  .resize = remote_resize,
  .close = remote_close,
};

static bool
is_power_of_2 (int64_t v)
{
  return v > 0 && (v & (v - 1)) == 0;
}

/* Passes the server's block size constraints on if nbdkit will accept
 * them, and splits requests to fit its maximum.
 */
static void
get_block_sizes (struct nbd_backend *n)
{
  int64_t min = nbd_get_block_size (n->nbd, LIBNBD_SIZE_MINIMUM);
  int64_t pref = nbd_get_block_size (n->nbd, LIBNBD_SIZE_PREFERRED);
  int64_t max = nbd_get_block_size (n->nbd, LIBNBD_SIZE_MAXIMUM);

  n->max_request = MAX_REQUEST;
  if (max > 0 && max < MAX_REQUEST)
    n->max_request = max;

  if (is_power_of_2 (min) && min <= 65536 &&
      is_power_of_2 (pref) && pref >= 512 && pref <= MAX_REQUEST &&
      max >= pref && max <= UINT32_MAX && max % min == 0) {
    n->b.block_min = min;
    n->b.block_pref = pref;
    n->b.block_max = max;
  }
}

/* Reads what the server can do.  Call once, after connecting. */
static int
get_capabilities (struct nbd_backend *n, bool readonly, char **errmsg)
{
  int64_t size = nbd_get_size (n->nbd);

  if (size == -1) {
    set_errmsg (errmsg, "Could not open '%s': %s", n->uri, last_error ());
    return -1;
  }
  if (!readonly && nbd_is_read_only (n->nbd) == 1) {
    set_errmsg (errmsg, "Could not open '%s': NBD export is read-only",
                n->uri);
    return -1;
  }
  n->b.size = size;
  n->b.driver = "nbd";
  n->b.can_flush = nbd_can_flush (n->nbd) == 1;
  n->b.can_trim = nbd_can_trim (n->nbd) == 1;
  n->b.can_cache = nbd_can_cache (n->nbd) == 1;
  n->fua = nbd_can_fua (n->nbd) == 1;
  n->b.can_fua = n->fua || n->b.can_flush;
  n->zero = nbd_can_zero (n->nbd) == 1;
  n->fast_zero = nbd_can_fast_zero (n->nbd) == 1;
  n->meta = nbd_can_meta_context (n->nbd,
                                  LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  get_block_sizes (n);
  return 0;
}

struct backend *
nbd_backend_open (const char *uri, bool readonly, char **errmsg)
{
  struct nbd_backend *n;

  n = calloc (1, sizeof *n);
  if (n == NULL || (n->uri = strdup (uri)) == NULL) {
    set_errmsg (errmsg, "%s", strerror (errno));
    free (n);
    return NULL;
  }
  n->b.ops = &remote_ops;
  pthread_mutex_init (&n->lock, NULL);

  n->nbd = nbd_create ();
  if (n->nbd == NULL ||
      nbd_add_meta_context (n->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (n->nbd, uri) == -1) {
    set_errmsg (errmsg, "Could not open '%s': %s", uri, last_error ());
    remote_close (&n->b);
    return NULL;
  }
  if (get_capabilities (n, readonly, errmsg) == -1) {
    remote_close (&n->b);
    return NULL;
  }
  return &n->b;
}
