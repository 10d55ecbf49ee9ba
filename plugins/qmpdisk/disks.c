/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: the registry of disks (see disks.h). */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <inttypes.h>
#include <string.h>
#include <errno.h>
#include <assert.h>
#include <pthread.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "qmp.h"
#include "disks.h"
#include "qmpdisk.h"

struct disk {
  struct disk *next;            /* list link; disks_lock */
  char *node;
  char *path;
  bool readonly;
  struct backend *b;
  unsigned refs;                /* disks_lock */
  unsigned open_count;          /* disks_lock */
  uint64_t size;                /* written under disks_lock, read atomically */
};

/* See "Locking" in disks.h. */
static pthread_mutex_t disks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct disk *disks;      /* in order of addition */
static bool shutting_down;      /* disks_disconnect_remote was called */

/* QEMU's rule: a letter, then letters, digits, '-', '.' or '_'.  Plain
 * ASCII tests, so that the locale cannot change the answer.
 */
static bool
is_letter (char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
check_node_name (const char *node, struct qmp_error *err)
{
  size_t i;

  if (!is_letter (node[0]))
    goto invalid;
  for (i = 1; node[i]; ++i) {
    char c = node[i];

    if (!is_letter (c) && !(c >= '0' && c <= '9') &&
        c != '-' && c != '.' && c != '_')
      goto invalid;
  }
  if (i > DISK_NODE_NAME_MAX) {
    qmp_error (err, "Node name too long: '%s' (at most %d characters)",
               node, DISK_NODE_NAME_MAX);
    return -1;
  }
  return 0;

 invalid:
  qmp_error (err, "Invalid node-name: '%s'", node);
  return -1;
}

/* Call with disks_lock held.  "" finds the first disk only if
 * allow_default.
 */
static struct disk *
find_locked (const char *name, bool allow_default)
{
  struct disk *d;

  if (allow_default && name[0] == '\0')
    return disks;
  for (d = disks; d; d = d->next)
    if (strcmp (d->node, name) == 0)
      return d;
  return NULL;
}

static void
free_disk (struct disk *d)
{
  nbdkit_debug ("qmpdisk: closing disk %s", d->node);
  d->b->ops->close (d->b);
  free (d->node);
  free (d->path);
  free (d);
}

static struct backend *
open_backend (const char *driver, const char *target, bool readonly,
              bool defer_rw, struct qmp_error *err)
{
  struct backend *b;

  if (strcmp (driver, "nbd") == 0)
    return nbd_backend_open (target, readonly, err);
  if (strcmp (driver, "file") != 0 && strcmp (driver, "host_device") != 0) {
    qmp_error (err, "Parameter 'driver' does not accept value '%s'",
               driver);
    return NULL;
  }

  b = file_backend_open (target, readonly, defer_rw, err);
  if (b && strcmp (driver, "host_device") == 0 &&
      strcmp (b->driver, "host_device") != 0) {
    qmp_error (err, "'host_device' driver requires '%s' to be a "
               "block device", target);
    b->ops->close (b);
    return NULL;
  }
  return b;
}

static void
free_unlisted (struct disk *d)
{
  if (d) {
    free (d->node);
    free (d->path);
  }
  free (d);
}

/* Call with disks_lock held. */
static int
check_unique_locked (const char *node, struct qmp_error *err)
{
  if (find_locked (node, false) == NULL)
    return 0;
  qmp_error (err, "Duplicate nodes with node-name='%s'", node);
  return -1;
}

/* Appends d to the list unless its name was taken meanwhile. */
static int
insert_disk (struct disk *d, struct qmp_error *err)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
  struct disk **pp;

  if (shutting_down) {
    qmp_error (err, "nbdkit is shutting down");
    return -1;
  }
  if (check_unique_locked (d->node, err) == -1)
    return -1;
  for (pp = &disks; *pp; pp = &(*pp)->next)
    ;
  *pp = d;
  return 0;
}

static struct disk *
prepare_disk (const char *node, const char *driver, const char *target,
              bool readonly, bool defer_rw, struct qmp_error *err)
{
  struct disk *d;

  if (check_node_name (node, err) == -1)
    return NULL;

  /* Checked before opening too: opening an NBD URI can be slow. */
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
    if (check_unique_locked (node, err) == -1)
      return NULL;
  }

  d = calloc (1, sizeof *d);
  if (d == NULL || (d->node = strdup (node)) == NULL ||
      (d->path = strdup (target)) == NULL) {
    qmp_error (err, "%s", strerror (errno));
    free_unlisted (d);
    return NULL;
  }
  d->b = open_backend (driver, target, readonly, defer_rw, err);
  if (d->b == NULL) {
    free_unlisted (d);
    return NULL;
  }
  d->readonly = readonly;
  d->size = d->b->size;
  d->refs = 1;
  return d;
}

struct disk *
disks_prepare (const char *node, const char *driver, const char *target,
               bool readonly, struct qmp_error *err)
{
  return prepare_disk (node, driver, target, readonly, false, err);
}

int
disks_insert (struct disk *d, struct qmp_error *err)
{
  if (insert_disk (d, err) == -1) {
    d->b->ops->close (d->b);
    free_unlisted (d);
    return -1;
  }
  nbdkit_debug ("qmpdisk: added disk %s (%s%s): %s, %" PRIu64 " bytes",
                d->node, d->b->driver, d->readonly ? ", read-only" : "",
                d->path, d->size);
  return 0;
}

int
disks_add_from_cmdline (const char *node, const char *path,
                        struct qmp_error *err)
{
  struct disk *d = prepare_disk (node, "file", path, server_readonly (),
                                 true, err);

  return d ? disks_insert (d, err) : -1;
}

int
disks_remove (const char *node, struct qmp_error *err)
{
  struct disk *d, **pp;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
    for (pp = &disks; *pp; pp = &(*pp)->next)
      if (strcmp ((*pp)->node, node) == 0)
        break;
    d = *pp;
    if (d == NULL) {
      qmp_error (err, "Failed to find node with node-name='%s'", node);
      return -1;
    }
    if (d->open_count > 0) {
      qmp_error (err, "Node '%s' is busy: %u open connection%s",
                 node, d->open_count, d->open_count == 1 ? "" : "s");
      return -1;
    }
    *pp = d->next;
    d->next = NULL;
  }

  nbdkit_debug ("qmpdisk: removed disk %s", node);
  disks_put (d);                /* the registry's reference */
  return 0;
}

int
disks_resize (const char *node, uint64_t size, struct qmp_error *err)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
  struct disk *d = find_locked (node, false);
  uint64_t old;

  if (d == NULL) {
    qmp_error (err, "Cannot find device='' nor node-name='%s'", node);
    return -1;
  }
  if (size == d->size)
    return 0;
  if (size > INT64_MAX) {
    qmp_error (err, "Invalid size %" PRIu64 " for node '%s'",
               size, node);
    return -1;
  }
  if (d->readonly) {
    qmp_error (err, "Block node is read-only");
    return -1;
  }
  /* An open connection keeps the size it saw when it connected, so it
   * could write past the new end, where no bitmap records anything.
   * Connections open only under disks_lock, so none can slip in.
   */
  if (size < d->size && d->open_count > 0) {
    qmp_error (err, "Cannot shrink node '%s' while it has %u open "
               "connection%s (growing is allowed)", node, d->open_count,
               d->open_count == 1 ? "" : "s");
    return -1;
  }

  /* Under disks_lock so that concurrent resizes of one disk cannot
   * store their sizes out of order, and no connection opens meanwhile.
   */
  old = d->size;
  if (d->b->ops->resize (d->b, size, err) == -1)
    return -1;
  nbdkit_debug ("qmpdisk: resized disk %s from %" PRIu64 " to %" PRIu64,
                node, old, size);
  __atomic_store_n (&d->size, size, __ATOMIC_RELEASE);
  return 0;
}

struct disk *
disks_get (const char *name)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
  struct disk *d = find_locked (name, true);

  if (d)
    d->refs++;
  return d;
}

void
disks_put (struct disk *d)
{
  bool last;

  if (d == NULL)
    return;
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
    assert (d->refs > 0);
    last = --d->refs == 0;
  }
  /* Unlisted by now: nobody else can find it. */
  if (last)
    free_disk (d);
}

void
disks_foreach (void (*fn) (struct disk *d, void *opaque), void *opaque)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
  struct disk *d;

  for (d = disks; d; d = d->next)
    fn (d, opaque);
}

size_t
disks_count (void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
  struct disk *d;
  size_t n = 0;

  for (d = disks; d; d = d->next)
    n++;
  return n;
}

void
disks_disconnect_remote (void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
  struct disk *d;

  shutting_down = true;
  for (d = disks; d; d = d->next)
    if (d->b->ops->disconnect) {
      nbdkit_debug ("qmpdisk: disconnecting disk %s from %s",
                    d->node, d->path);
      d->b->ops->disconnect (d->b);
    }
}

void
disks_cleanup (void)
{
  struct disk *d, *next;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
    d = disks;
    disks = NULL;
  }
  for (; d; d = next) {
    next = d->next;
    d->next = NULL;
    disks_put (d);
  }
}

/* Makes d writable for a connection, or the connection read-only
 * when the target may not be written, as nbdkit's file plugin does.
 */
static int
open_for_writing (struct disk *d, bool *readonly)
{
  struct qmp_error err = { 0 };
  int errnum, r = 0;

  if (d->b->ops->open_rw (d->b, &err) == 0)
    return 0;
  errnum = errno;
  if (errnum == EACCES || errnum == EPERM || errnum == EROFS) {
    nbdkit_debug ("qmpdisk: %s: %s: serving it read-only",
                  d->node, err.desc ? err.desc : strerror (errnum));
    *readonly = true;
  }
  else {
    nbdkit_error ("%s: %s", d->node, err.desc ? err.desc : strerror (errnum));
    nbdkit_set_error (errnum);
    r = -1;
  }
  qmp_error_clear (&err);
  return r;
}

struct disk *
disks_open (const char *name, bool *readonly)
{
  struct disk *d;
  bool empty;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
    d = find_locked (name, true);
    empty = disks == NULL;
    if (d) {
      d->refs++;
      d->open_count++;
    }
  }
  if (d == NULL) {
    if (empty)
      nbdkit_error ("no disks: add one with blockdev-add first");
    else
      nbdkit_error ("unknown export '%s': not a node name", name);
    nbdkit_set_error (ENOENT);
    return NULL;
  }

  if (d->readonly)
    *readonly = true;
  if (!*readonly && open_for_writing (d, readonly) == -1) {
    disks_close (d);
    return NULL;
  }
  return d;
}

void
disks_close (struct disk *d)
{
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&disks_lock);
    assert (d->open_count > 0);
    d->open_count--;
  }
  disks_put (d);
}

const char *
disk_node (const struct disk *d)
{
  return d->node;
}

const char *
disk_path (const struct disk *d)
{
  return d->path;
}

const char *
disk_driver (const struct disk *d)
{
  return d->b->driver;
}

bool
disk_readonly (const struct disk *d)
{
  return d->readonly;
}

uint64_t
disk_size (const struct disk *d)
{
  return __atomic_load_n (&d->size, __ATOMIC_ACQUIRE);
}

struct backend *
disk_backend (const struct disk *d)
{
  return d->b;
}
